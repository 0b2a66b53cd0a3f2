//! Part 3, scaling with stream length: playlist GET latency with 10, 600 and 3600 segments stored (retention 0).

import { startHost } from './lib/host.mjs';
import { wrk } from './lib/wrk.mjs';
import { startNginx } from './lib/nginx.mjs';
import { request, agent } from './lib/http.mjs';
import { newSession, putSegment } from './lib/stream.mjs';
import { segment } from './lib/media.mjs';
import { summary } from './lib/stats.mjs';

/** PUT 1 s segments `from..to-1` four at a time, capture times one second apart ending about now. */
async function fill(base, s, bytes, from, to, total) {
  const a = agent(4);
  const t0 = Date.now() - total * 1000;
  let next = from;
  const worker = async () => {
    while (next < to) {
      const seq = next++;
      const r = await putSegment(base, s, seq, bytes, { duration: 1, agent: a, pdt: new Date(t0 + seq * 1000) });
      if (r.status !== 201 && r.status !== 200) {
        throw new Error(`filling: PUT ${seq} answered ${r.status || r.error}: ${r.body?.toString().slice(0, 200)}`);
      }
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  a.destroy();
}

/** Run part 3: one live stream grows through `cfg.scaling.counts`; at each size, unloaded playlist GETs by wrk -c1. */
export async function runScaling({ root, cfg, log }) {
  const tiny = segment(root, 'tiny1s');
  const counts = cfg.scaling.counts;
  const server = await startHost(root, 'scaling', { stream_retention: 0, idle_timeout: 3600 });
  try {
    const s = newSession();
    const url = `${server.url}/playlist/${s.id}.m3u8`;
    const points = [];
    let have = 0;
    for (const count of counts) {
      const t0 = performance.now();
      await fill(server.url, s, tiny, have, count, counts.at(-1));
      log(`  scaling: stored ${count} segments (${((performance.now() - t0) / 1000).toFixed(1)} s to add ${count - have})`);
      have = count;
      const pl = await request(url);
      if (pl.status !== 200) throw new Error(`playlist answered ${pl.status}`);
      const listed = pl.body.toString().split('\n').filter((l) => l.startsWith('#EXTINF')).length;
      // The same bytes from nginx: what sending a playlist of this size costs by itself.
      const nginx = await startNginx({ '/p.m3u8': pl.body });
      const runs = [];
      const ref = [];
      try {
        for (let i = 0; i < cfg.runs; i++) {
          const r = await wrk(url, { threads: 1, connections: 1, seconds: cfg.scaling.wrkSeconds });
          if (r.errors) throw new Error(`playlist GETs failed ${r.errors} times at ${count} segments`);
          runs.push(r);
          const n = await wrk(`${nginx.url}/p.m3u8`, { threads: 1, connections: 1, seconds: cfg.scaling.wrkSeconds });
          ref.push(n);
          log(`  scaling ${count}: p50 ${r.p50_ms.toFixed(2)} ms, p99 ${r.p99_ms.toFixed(2)} ms, ${r.rps.toFixed(0)} req/s; `
            + `nginx, same bytes: p50 ${n.p50_ms.toFixed(2)} ms, p99 ${n.p99_ms.toFixed(2)} ms`);
        }
      } finally { await nginx.stop(); }
      points.push({
        stored: count, listed, playlist_bytes: pl.body.length,
        type: pl.body.toString().match(/#EXT-X-PLAYLIST-TYPE:(\w+)/)?.[1] ?? 'none',
        p50_ms: summary(runs.map((r) => r.p50_ms)), p99_ms: summary(runs.map((r) => r.p99_ms)),
        rps: summary(runs.map((r) => r.rps)),
        nginx_p50_ms: summary(ref.map((r) => r.p50_ms)), nginx_p99_ms: summary(ref.map((r) => r.p99_ms)),
        cmd: runs[0].cmd.replace(server.url, 'http://127.0.0.1:PORT').replace(s.id, '{stream}'),
      });
    }
    return { points, segment_bytes: tiny.length };
  } finally {
    await server.stop();
  }
}
