//! A redis-server of the benchmark's own (Debian package `redis-server`) on a free loopback port,
//! with no persistence, and a bare RESP client to read its command counters.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { freePort } from './nginx.mjs';
import { sleep } from './http.mjs';

/** Sends one command (array of strings) and resolves to its reply as text (bulk, simple or integer). */
export function redisCommand(port, args) {
  return new Promise((resolve, reject) => {
    const c = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => { c.destroy(); reject(new Error(`redis ${args[0]}: no answer`)); }, 5000);
    c.on('error', (e) => { clearTimeout(timer); reject(e); });
    c.on('connect', () => {
      c.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`);
    });
    c.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      const eol = buf.indexOf('\r\n');
      if (eol < 0) return;
      const head = buf.subarray(0, eol).toString();
      let reply = null;
      if (head[0] === '$') {
        const len = Number(head.slice(1));
        if (len < 0) reply = '';
        else if (buf.length >= eol + 2 + len + 2) reply = buf.subarray(eol + 2, eol + 2 + len).toString();
      } else if (head[0] === '-') {
        clearTimeout(timer); c.destroy(); reject(new Error(`redis ${args[0]}: ${head.slice(1)}`)); return;
      } else {
        reply = head.slice(1);
      }
      if (reply !== null) { clearTimeout(timer); c.end(); resolve(reply); }
    });
  });
}

/** `INFO commandstats` as `{ get: calls, set: calls, ... }`. */
export async function commandCalls(port) {
  const text = await redisCommand(port, ['INFO', 'commandstats']);
  const calls = {};
  for (const m of text.matchAll(/^cmdstat_([a-z|]+):calls=(\d+)/gm)) calls[m[1]] = Number(m[2]);
  return calls;
}

/** Starts redis-server; resolves to `{ port, url, pid, stop() }` once it answers PING. */
export async function startRedis() {
  const dir = mkdtempSync(join(tmpdir(), 'chalkstream-bench-redis-'));
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const child = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no',
      '--daemonize', 'no', '--loglevel', 'warning', '--dir', dir], { stdio: 'ignore' });
    const exited = new Promise((r) => child.once('exit', r));
    let gone = false;
    exited.then(() => { gone = true; });
    for (let i = 0; i < 200 && !gone; i++) {
      if (await redisCommand(port, ['PING']).then((r) => r === 'PONG', () => false)) {
        return {
          port, url: `redis://127.0.0.1:${port}`, pid: child.pid,
          async stop() {
            if (child.exitCode === null) { child.kill('SIGKILL'); await exited; }
            rmSync(dir, { recursive: true, force: true });
          },
        };
      }
      await sleep(50);
    }
    if (!gone) { child.kill('SIGKILL'); await exited; }
  }
  rmSync(dir, { recursive: true, force: true });
  throw new Error('redis-server did not start (Debian package redis-server; scripts/setup --test installs it)');
}
