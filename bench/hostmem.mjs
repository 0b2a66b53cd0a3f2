//! The host's memory under a low-latency stream in fast motion, for comparing host builds side by
//! side in minutes where the soak takes hours (`scripts/bench --only hostmem`).
//!
//! For each host binary named in CHALKSTREAM_HOSTMEM_BINS (`name=path,…`; default: this checkout's
//! target/release/chalkstream-host), all at once: one host (retention CHALKSTREAM_HOSTMEM_RETENTION
//! minutes, default 2), a simulated broadcaster uploading 2 s 720p segments in six parts and a
//! commit at CHALKSTREAM_HOSTMEM_SPEED times real time (default 2), and five low-latency viewers
//! (bench/ll.mjs `viewer`), for CHALKSTREAM_HOSTMEM_MIN minutes (default 12). Every 30 s a row per
//! host: segments uploaded, threads, resident memory in the pooled instance slots and outside
//! them (`rssSplit`), and upload errors. At the end, each host's outside-the-pool memory at the
//! first and last row after the first quarter, and its growth between them.
//!
//! Fast motion is not the soak: a part retires only once its segment is four target durations
//! old, so the store holds more keys than a real-time stream, and retention spans more segments.

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startHost } from './lib/host.mjs';
import { newSession } from './lib/stream.mjs';
import { segment } from './lib/media.mjs';
import { rssSplit } from './lib/proc.mjs';
import { agent, sleep } from './lib/http.mjs';
import { putPart, commit, cutParts, viewer, PARTS, PART_MS } from './ll.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const smoke = process.argv.includes('--smoke');
const MIN = Number(process.env.CHALKSTREAM_HOSTMEM_MIN || (smoke ? 0.5 : 12));
const SPEED = Number(process.env.CHALKSTREAM_HOSTMEM_SPEED || 2);
const RETENTION = Number(process.env.CHALKSTREAM_HOSTMEM_RETENTION || 2);
const BINS = (process.env.CHALKSTREAM_HOSTMEM_BINS || `this=${join(root, 'target', 'release', 'chalkstream-host')}`)
  .split(',').map((b) => b.split('='));
const SAMPLE_MS = smoke ? 10_000 : 30_000;
const MIB = 2 ** 20;

const threads = (pid) => Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/^Threads:\s+(\d+)/m)?.[1]);

async function run(name, bin, parts) {
  const server = await startHost(root, `hostmem-${name}`, { stream_retention: RETENTION }, {}, [], bin);
  const s = newSession();
  const stopAt = Date.now() + MIN * 60_000;
  const st = { errors: 0, requests: 0, reload: [], part: [], late: [], joined: [], fetched: 0, bytes: 0, unused_hints: 0, uploadErrors: 0 };
  let seq = 0;
  const broadcaster = (async () => {
    const a = agent(1);
    const start = Date.now();
    for (let n = 0; Date.now() < stopAt; seq++) {
      for (let p = 0; p < PARTS; p++, n++) {
        await sleep(start + (n * PART_MS) / SPEED - Date.now());
        const r = await putPart(server.url, s, seq, p, parts[p], { agent: a, pdt: new Date() });
        if (r.status !== 201 && r.status !== 200) st.uploadErrors++;
      }
      const c = await commit(server.url, s, seq, PARTS, a);
      if (c.status !== 201 && c.status !== 200) st.uploadErrors++;
    }
    a.destroy();
  })();
  await sleep(2000);
  const viewers = Array.from({ length: 5 }, async () => {
    while (Date.now() < stopAt) { await viewer(server.url, s.id, stopAt, st, new Map()); await sleep(500); }
  });
  const rows = [];
  const t0 = Date.now();
  for (;;) {
    const split = rssSplit(server.pid);
    const row = { min: (Date.now() - t0) / 60_000, seq, threads: threads(server.pid), pool: split.pool / MIB, other: split.other / MIB, errors: st.uploadErrors };
    rows.push(row);
    console.log(`hostmem ${name.padEnd(10)} ${row.min.toFixed(1).padStart(5)} min  ${String(row.seq).padStart(5)} segments  `
      + `${String(row.threads).padStart(4)} threads  pool ${row.pool.toFixed(1).padStart(5)} MiB  other ${row.other.toFixed(1).padStart(6)} MiB  `
      + `${row.errors} upload errors`);
    if (Date.now() >= stopAt) break;
    await sleep(Math.min(SAMPLE_MS, stopAt - Date.now()));
  }
  await broadcaster;
  await Promise.all(viewers);
  await server.stop();
  const settled = rows.filter((r) => r.min >= MIN / 4);
  const first = settled[0] ?? rows[0];
  const last = rows.at(-1);
  return { name, first, last, growth: last.other - first.other, viewerParts: st.fetched, uploadErrors: st.uploadErrors };
}

const parts = cutParts(segment(root, 'hd2s'), PARTS);
console.log(`hostmem: ${MIN} min at ${SPEED}x real time, retention ${RETENTION} min, 5 low-latency viewers; hosts: ${BINS.map(([n]) => n).join(', ')}`);
const results = await Promise.all(BINS.map(([name, bin]) => run(name, bin, parts)));
let ok = true;
for (const r of results) {
  console.log(`hostmem ${r.name}: outside the pool ${r.first.other.toFixed(1)} MiB at ${r.first.min.toFixed(1)} min -> `
    + `${r.last.other.toFixed(1)} MiB at ${r.last.min.toFixed(1)} min (${r.growth >= 0 ? '+' : ''}${r.growth.toFixed(1)} MiB), `
    + `${r.last.threads} threads, ${r.viewerParts} parts to viewers, ${r.uploadErrors} upload errors`);
  if (r.uploadErrors > 0 || r.viewerParts === 0) ok = false;
}
process.exit(ok ? 0 : 1);
