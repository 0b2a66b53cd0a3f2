//! Starts Debian's nginx on a free loopback port serving a directory of static files: the reference for GETs.

import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, chmodSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { sleep } from './http.mjs';

export const NGINX_BIN = existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : 'nginx';

/** A free loopback TCP port (the kernel picks it; it is released before we return). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

async function waitForPort(port, ms) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const ok = await new Promise((r) => {
      const c = net.connect(port, '127.0.0.1', () => { c.end(); r(true); });
      c.on('error', () => r(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`nginx did not listen on 127.0.0.1:${port} within ${ms} ms`);
}

/**
 * Start nginx (worker_processes auto, sendfile, keep-alive, no access log) serving `files`, a map from
 * URL path to bytes. Resolves to `{ url, stop() }`.
 */
export async function startNginx(files) {
  const dir = mkdtempSync(join(tmpdir(), 'chalkstream-nginx-'));
  chmodSync(dir, 0o755);
  const www = join(dir, 'www');
  for (const [path, bytes] of Object.entries(files)) {
    const full = join(www, path);
    mkdirSync(join(full, '..'), { recursive: true, mode: 0o755 });
    writeFileSync(full, bytes, { mode: 0o644 });
  }
  const port = await freePort();
  const conf = `
worker_processes auto;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  types { video/mp2t ts; application/vnd.apple.mpegurl m3u8; }
  server {
    listen 127.0.0.1:${port};
    root ${www};
  }
}
`;
  writeFileSync(join(dir, 'nginx.conf'), conf);
  const child = spawn(NGINX_BIN, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')],
    { stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise((r) => child.once('exit', r));
  await Promise.race([waitForPort(port, 10_000),
    exited.then((c) => { throw new Error(`nginx exited with ${c}; see ${dir}/error.log`); })]);
  const stop = async () => {
    if (child.exitCode === null) { child.kill('SIGQUIT'); await exited; }
  };
  return { url: `http://127.0.0.1:${port}`, stop };
}
