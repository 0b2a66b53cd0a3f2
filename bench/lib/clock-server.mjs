//! Serves bench/clock/ (the latency clock page) on a free loopback port, for the tab the extension captures.

import http from 'node:http';
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'clock');
const FILES = { '/clock.html': 'text/html; charset=utf-8', '/clock.js': 'text/javascript; charset=utf-8' };

/** Resolves to `{ url, close() }`; `${url}/clock.html` is the page (add `?busy=1` for motion). */
export function startClockServer() {
  const server = http.createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (!FILES[path]) { res.writeHead(404, { 'content-type': 'text/plain' }); res.end('not found'); return; }
    res.writeHead(200, { 'content-type': FILES[path], 'cache-control': 'no-store' });
    res.end(readFileSync(join(DIR, path.slice(1))));
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }),
  })));
}
