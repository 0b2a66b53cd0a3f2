//! A minimal keep-alive HTTP/1.1 client over node:http that times each request and never throws.

import http from 'node:http';
import net from 'node:net';

/** One keep-alive agent per simulated client, so each holds its own connections like a real one. */
export const agent = (maxSockets = 2) => new http.Agent({ keepAlive: true, maxSockets });

/**
 * Send one request. Resolves to `{ status, headers, body, bytes, ms, error }`; `status` is 0 when the
 * request failed on the network or timed out. With `discard`, the body is counted, not kept.
 */
export function request(url, { method = 'GET', headers = {}, body, agent: a, timeoutMs = 15_000, discard = false } = {}) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let done = false;
    const finish = (r) => { if (!done) { done = true; resolve({ ms: performance.now() - t0, ...r }); } };
    const req = http.request(url, { method, headers, agent: a }, (res) => {
      const chunks = [];
      let bytes = 0;
      res.on('data', (c) => { bytes += c.length; if (!discard) chunks.push(c); });
      res.on('end', () => finish({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks), bytes }));
      res.on('error', (e) => finish({ status: 0, error: e.message, bytes }));
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (e) => finish({ status: 0, error: e.message, bytes: 0 }));
    req.end(body);
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * One keep-alive HTTP/1.1 connection for GETs, one request at a time, parsed by hand: for load
 * generators that share the cores with the server they measure (bench/ll.mjs), where node:http's
 * per-request machinery would cost a large part of a core. Answers need a `content-length` (the
 * host and Spin send one for every answer here); anything else is a failed request. `get` resolves
 * to `{ status, body, bytes, ms, error }` like `request` (`status` 0 on failure), and reconnects
 * after a failure or when the server closes.
 *
 * Why not undici (the issue "Crates for solved problems" asked): bench/httpclient.mjs measures the
 * client process's CPU per request against undici 7.30 on loopback. In 3 runs (best of 2 each, on
 * two cores shared with other work), with 640 connections whose answers are held 300 ms (about
 * bench/ll.mjs at 320 viewers, ~2,050 requests/s) this client spent 29–42 µs per request, undici's
 * `request` 50–71 (+48–85%) and its lower-level `dispatch` 46–63 (+48–63%); 64 connections back to
 * back: 15–23 µs against 25–39 (+41–106%) and 19–30 (+25–61%); 100 kB parts, body discarded:
 * 144–181 µs against 199–235 (+30–38%) and 165–218 (+15–20%). The bar was undici within ~15%, as
 * this client's CPU is taken from the host it measures; run the script again to re-decide.
 */
export function connection(base) {
  const { hostname, port } = new URL(base);
  let socket = null;
  let pending = null; // { resolve, t0, discard, head: Buffer | null, status, length, chunks, bytes }
  let buf = Buffer.alloc(0);

  const finish = (r) => {
    const p = pending;
    pending = null;
    if (p) p.resolve({ ms: performance.now() - p.t0, ...r });
  };
  const fail = (message) => {
    if (socket) { socket.destroy(); socket = null; }
    buf = Buffer.alloc(0);
    finish({ status: 0, error: message, bytes: 0, body: Buffer.alloc(0) });
  };
  const onData = (data) => {
    if (!pending) return;
    buf = buf.length ? Buffer.concat([buf, data]) : data;
    const p = pending;
    if (p.status === undefined) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buf.toString('latin1', 0, end);
      buf = buf.subarray(end + 4);
      const status = Number(head.slice(9, 12));
      const m = head.match(/\r\ncontent-length:\s*(\d+)/i);
      if (!status || !m) return fail(`unreadable answer head: ${head.split('\r\n')[0]}`);
      p.status = status;
      p.length = Number(m[1]);
      p.close = /\r\nconnection:\s*close/i.test(head);
    }
    const take = Math.min(buf.length, p.length - p.bytes);
    if (take > 0) {
      if (!p.discard) p.chunks.push(buf.subarray(0, take));
      p.bytes += take;
      buf = buf.subarray(take);
    }
    if (p.bytes === p.length) {
      if (p.close) { socket.destroy(); socket = null; }
      finish({ status: p.status, body: p.discard ? Buffer.alloc(0) : Buffer.concat(p.chunks), bytes: p.bytes });
    }
  };
  const connect = () => {
    const s = net.connect({ host: hostname, port: Number(port) });
    socket = s;
    s.setNoDelay(true);
    // A socket given up on (a timeout, an error) may still report: only the current one counts.
    s.on('data', (data) => { if (socket === s) onData(data); });
    s.on('error', (e) => { if (socket === s) fail(e.message); });
    s.on('close', () => { if (socket === s) { socket = null; if (pending) fail('the server closed the connection'); } });
  };
  return {
    /** GET `path` (with its query). */
    get(path, { discard = false, timeoutMs = 15_000 } = {}) {
      if (pending) throw new Error('one request at a time on a connection');
      return new Promise((resolve) => {
        pending = { resolve, t0: performance.now(), discard, status: undefined, length: 0, chunks: [], bytes: 0 };
        const timer = setTimeout(() => fail(`no answer within ${timeoutMs} ms`), timeoutMs);
        const done = pending.resolve;
        pending.resolve = (r) => { clearTimeout(timer); done(r); };
        if (!socket) connect();
        socket.write(`GET ${path} HTTP/1.1\r\nhost: ${hostname}:${port}\r\n\r\n`);
      });
    },
    close() { if (socket) socket.destroy(); socket = null; },
  };
}
