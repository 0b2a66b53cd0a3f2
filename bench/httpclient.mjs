//! The bench's keep-alive GET client (bench/lib/http.mjs `connection`) against undici's, on
//! loopback: CPU per request of the client process, which decides whether the hand-written client
//! stays (it does while undici costs more than ~15% over it; the numbers are in its comment). A
//! child process serves bodies with content-length on 127.0.0.1 (so its CPU is not counted); this
//! process runs each client in turn for a bounded time and reads process.cpuUsage() around it.
//!
//!   node bench/httpclient.mjs [seconds per run, 1 to 60, default 10: about 4.5 minutes in all]
//!
//! undici three ways: its `request` API (a body stream), `dispatch` with a handler, and `dispatch`
//! with the older handler interface. Three loads: `busy`, 64 connections each sending its next GET
//! for a 1.5 kB body as soon as the last is answered; `held`, 640 connections whose 1.5 kB answers
//! the server holds 300 ms (as blocking playlist reloads are held), about the request rate of
//! bench/ll.mjs at 320 viewers; and `parts`, 320 connections fetching 100 kB answers held 300 ms
//! with the body discarded (as a viewer's part loader does). Each of the four clients runs twice
//! per load, interleaved, and the lower CPU per request of its two runs is reported (other work on
//! the machine only ever adds to it).

import { fork } from 'node:child_process';
import http from 'node:http';
import { Client } from 'undici';
import { connection } from './lib/http.mjs';

/** undici's Client, one per connection (pipelining 1), through its `request` API (a body stream). */
function undiciRequest(base) {
  const client = new Client(base, { pipelining: 1, keepAliveTimeout: 60_000 });
  return {
    async get(path, { discard = false, timeoutMs = 15_000 } = {}) {
      const t0 = performance.now();
      try {
        const res = await client.request({ path, method: 'GET', headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
        const chunks = [];
        let bytes = 0;
        for await (const c of res.body) { bytes += c.length; if (!discard) chunks.push(c); }
        return { status: res.statusCode, body: Buffer.concat(chunks), bytes, ms: performance.now() - t0 };
      } catch (e) {
        return { status: 0, error: e.message, bytes: 0, body: Buffer.alloc(0), ms: performance.now() - t0 };
      }
    },
    close() { client.destroy().catch(() => {}); },
  };
}

/** undici's Client through `dispatch` with a handler: no body stream, no promise per chunk. */
function undiciDispatch(base) {
  const client = new Client(base, { pipelining: 1, keepAliveTimeout: 60_000 });
  return {
    get(path, { discard = false, timeoutMs = 15_000 } = {}) {
      return new Promise((resolve) => {
        const t0 = performance.now();
        let status = 0;
        let bytes = 0;
        const chunks = [];
        client.dispatch({ path, method: 'GET', headersTimeout: timeoutMs, bodyTimeout: timeoutMs }, {
          onRequestStart() {},
          onResponseStart(_c, statusCode) { status = statusCode; },
          onResponseData(_c, chunk) { bytes += chunk.length; if (!discard) chunks.push(chunk); },
          onResponseEnd() { resolve({ status, body: Buffer.concat(chunks), bytes, ms: performance.now() - t0 }); },
          onResponseError(_c, e) { resolve({ status: 0, error: e.message, bytes: 0, body: Buffer.alloc(0), ms: performance.now() - t0 }); },
        });
      });
    },
    close() { client.destroy().catch(() => {}); },
  };
}

/** The same through undici 7's older handler interface, which its core still speaks natively (the
 * newer one above is adapted to it per request, headers parsed into an object). */
function undiciLegacy(base) {
  const client = new Client(base, { pipelining: 1, keepAliveTimeout: 60_000 });
  return {
    get(path, { discard = false, timeoutMs = 15_000 } = {}) {
      return new Promise((resolve) => {
        const t0 = performance.now();
        let status = 0;
        let bytes = 0;
        const chunks = [];
        client.dispatch({ path, method: 'GET', headersTimeout: timeoutMs, bodyTimeout: timeoutMs }, {
          onConnect() {},
          onHeaders(statusCode) { status = statusCode; return true; },
          onData(chunk) { bytes += chunk.length; if (!discard) chunks.push(chunk); return true; },
          onComplete() { resolve({ status, body: Buffer.concat(chunks), bytes, ms: performance.now() - t0 }); },
          onError(e) { resolve({ status: 0, error: e.message, bytes: 0, body: Buffer.alloc(0), ms: performance.now() - t0 }); },
        });
      });
    },
    close() { client.destroy().catch(() => {}); },
  };
}

const CLIENTS = {
  'hand-written': connection,
  'undici request': undiciRequest,
  'undici dispatch': undiciDispatch,
  'undici dispatch, older handler': undiciLegacy,
};

async function run(make, base, { conns, hold, size, discard, seconds }) {
  const clients = Array.from({ length: conns }, () => make(base));
  const path = `/x?hold=${hold}&size=${size}`;
  // Warm up: open every connection and let the JIT settle before measuring.
  const warmUntil = performance.now() + 1000;
  await Promise.all(clients.map(async (c) => { while (performance.now() < warmUntil) await c.get(path, { discard }); }));
  let requests = 0;
  let failures = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const stopAt = t0 + seconds * 1000;
  await Promise.all(clients.map(async (c) => {
    while (performance.now() < stopAt) {
      const r = await c.get(path, { discard });
      if (r.status === 200 && r.bytes === size && r.body.length === (discard ? 0 : size)) requests++; else failures++;
    }
  }));
  const wall = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  for (const c of clients) c.close();
  const cpuUs = cpu.user + cpu.system;
  return { rps: requests / wall, usPerReq: cpuUs / requests, core: cpuUs / 1e6 / wall, failures };
}

async function main() {
  const seconds = Number(process.argv[2] || 10);
  if (!(seconds > 0 && seconds <= 60)) throw new Error('seconds per run: 1 to 60');
  const server = fork(new URL(import.meta.url).pathname, ['--serve']);
  const port = await new Promise((resolve) => server.once('message', resolve));
  const base = `http://127.0.0.1:${port}`;
  const loads = {
    busy: { conns: 64, hold: 0, size: 1500, discard: false, seconds },
    held: { conns: 640, hold: 300, size: 1500, discard: false, seconds },
    parts: { conns: 320, hold: 300, size: 100_000, discard: true, seconds },
  };
  try {
    for (const [load, cfg] of Object.entries(loads)) {
      const best = {};
      for (let round = 0; round < 2; round++) {
        for (const [name, make] of Object.entries(CLIENTS)) {
          const r = await run(make, base, cfg);
          console.log(`${load} round ${round + 1} ${name}: ${r.rps.toFixed(0)} req/s, ${r.usPerReq.toFixed(1)} µs CPU/request, ${(100 * r.core).toFixed(0)}% of a core, ${r.failures} failed`);
          if (!best[name] || r.usPerReq < best[name].usPerReq) best[name] = r;
        }
      }
      const hand = best['hand-written'].usPerReq;
      for (const [name, r] of Object.entries(best)) {
        console.log(`${load} best ${name}: ${r.usPerReq.toFixed(1)} µs CPU/request (${(100 * (r.usPerReq / hand - 1)).toFixed(0)}% vs hand-written), ${r.rps.toFixed(0)} req/s`);
      }
    }
  } finally {
    server.disconnect();
    server.kill();
  }
}

if (process.argv[2] === '--serve') {
  const bodies = new Map();
  const server = http.createServer((req, res) => {
    const q = new URL(req.url, 'http://x').searchParams;
    const hold = Number(q.get('hold') || 0);
    const size = Number(q.get('size') || 0);
    if (!bodies.has(size)) bodies.set(size, Buffer.alloc(size, 'x'));
    const body = bodies.get(size);
    const answer = () => res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length }).end(body);
    if (hold) setTimeout(answer, hold); else answer();
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1', () => process.send(server.address().port));
  process.on('disconnect', () => process.exit(0));
} else {
  await main();
}
