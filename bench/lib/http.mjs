//! A minimal keep-alive HTTP/1.1 client over node:http that times each request and never throws.

import http from 'node:http';

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
