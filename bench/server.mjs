//! Part 2, server capacity: segment and playlist GETs against nginx, a simulated audience, and ingest.

import { startHost } from './lib/host.mjs';
import { startNginx } from './lib/nginx.mjs';
import { wrk } from './lib/wrk.mjs';
import { request, agent, sleep } from './lib/http.mjs';
import { newSession, mustPut, putSegment } from './lib/stream.mjs';
import { segment } from './lib/media.mjs';
import { percentile, summary } from './lib/stats.mjs';
import { cpuMeter } from './lib/proc.mjs';

const SEGMENT_S = 2;

/** Parse a media playlist: `{ target, uris }`, URIs resolved against the playlist's URL. */
export function parsePlaylist(text, url) {
  const target = Number(text.match(/#EXT-X-TARGETDURATION:(\d+)/)?.[1] ?? NaN);
  const uris = text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))
    .map((l) => new URL(l, url).href);
  return { target, uris, ended: text.includes('#EXT-X-ENDLIST') };
}

/** Fill a new live stream with `count` 2 s segments whose capture times end now. */
async function liveStream(base, bytes, count) {
  const s = newSession();
  const now = Date.now();
  for (let seq = 0; seq < count; seq++) {
    await mustPut(base, s, seq, bytes, { duration: SEGMENT_S, pdt: new Date(now - (count - seq) * SEGMENT_S * 1000) });
  }
  return s;
}

const r0 = (files, p) => files[p === '/' ? '/index.html' : p];

/** GET of one ~1 MiB segment and of the live playlist: ours vs nginx with the same bytes, runs interleaved. */
async function getVsNginx(base, pid, hd, cfg, log) {
  const s = await liveStream(base, hd, 10);
  // The landing page reads no key-value data: it measures the host's cost per request (a fresh
  // component instance, HTTP in and out), the floor under the other two.
  const paths = { segment: `/chunks/${s.id}/5.ts`, playlist: `/playlist/${s.id}.m3u8`, floor: '/' };
  const files = {};
  for (const [k, p] of Object.entries(paths)) {
    const r = await request(base + p);
    if (r.status !== 200) throw new Error(`GET ${k} answered ${r.status}; cannot benchmark it`);
    files[p === '/' ? '/index.html' : p] = r.body;
  }
  const nginx = await startNginx(files);
  const out = {};
  try {
    for (const [k, p] of Object.entries(paths)) {
      const runs = { ours: [], nginx: [] };
      for (let i = 0; i < cfg.runs; i++) {
        for (const [who, url] of [['ours', base], ['nginx', nginx.url]]) {
          const meter = cpuMeter(pid);
          const r = await wrk(url + p, { threads: 2, connections: 16, seconds: cfg.wrkSeconds });
          const cpu = meter.stop().percent;
          if (who === 'ours') r.host_cpu_pct = cpu;
          runs[who].push(r);
          log(`  GET ${k} ${who} run ${i + 1}: ${r.rps.toFixed(0)} req/s, p99 ${r.p99_ms.toFixed(2)} ms, ${r.errors} errors`
            + (who === 'ours' ? `, host CPU ${cpu.toFixed(0)}%` : ''));
        }
      }
      out[k] = {
        bytes: r0(files, p).length,
        cmd: runs.ours[0].cmd.replace(base, 'http://127.0.0.1:PORT').replace(s.id, '{stream}'),
        ours: { rps: summary(runs.ours.map((r) => r.rps)), p99_ms: summary(runs.ours.map((r) => r.p99_ms)),
          host_cpu_pct: summary(runs.ours.map((r) => r.host_cpu_pct)),
          errors: runs.ours.reduce((a, r) => a + r.errors, 0) },
        nginx: { rps: summary(runs.nginx.map((r) => r.rps)), p99_ms: summary(runs.nginx.map((r) => r.p99_ms)),
          errors: runs.nginx.reduce((a, r) => a + r.errors, 0) },
        ratio: summary(runs.ours.map((r, i) => r.rps / runs.nginx[i].rps)),
      };
    }
  } finally { await nginx.stop(); }
  return out;
}

/** One simulated viewer: the playlist every target duration, each new segment once, until `stopAt`. */
async function viewer(playlistUrl, stopAt, st) {
  const a = agent(2);
  const seen = new Set();
  let first = true;
  await sleep(Math.random() * SEGMENT_S * 1000);
  while (Date.now() < stopAt) {
    const t0 = Date.now();
    const p = await request(playlistUrl, { agent: a });
    st.playlist.push(p.ms);
    let target = SEGMENT_S;
    if (p.status !== 200) { st.errors++; st.lastError = `playlist ${p.status || p.error}`; } else {
      const pl = parsePlaylist(p.body.toString(), playlistUrl);
      target = pl.target || SEGMENT_S;
      const fresh = pl.uris.filter((u) => !seen.has(u));
      // Joining viewers start three segments from the live edge, as hls.js does by default.
      const wanted = first ? fresh.slice(-3) : fresh;
      fresh.forEach((u) => seen.add(u));
      first = false;
      for (const u of wanted) {
        if (Date.now() >= stopAt) break;
        const r = await request(u, { agent: a, discard: true });
        st.segment.push(r.ms);
        st.bytes += r.bytes;
        if (r.status !== 200) { st.errors++; st.lastError = `segment ${r.status || r.error}`; }
      }
    }
    await sleep(target * 1000 - (Date.now() - t0));
  }
  a.destroy();
}

/** A broadcaster that PUTs one 2 s segment every 2 s into `s` until `stopAt`; its PUT times go to `st`. */
async function broadcaster(base, s, bytes, stopAt, st, phaseMs) {
  const a = agent(1);
  await sleep(phaseMs);
  let seq = 0;
  const start = Date.now();
  while (Date.now() < stopAt) {
    const r = await putSegment(base, s, seq, bytes, { duration: SEGMENT_S, agent: a });
    st.put.push(r.ms);
    if (r.status !== 201 && r.status !== 200) { st.errors++; st.lastError = `PUT ${r.status || r.error}`; }
    seq++;
    await sleep(start + seq * SEGMENT_S * 1000 - Date.now());
  }
  a.destroy();
  return seq;
}

/** Ramp `ns` (doubling), then one bisection step; `trial(n)` says `{ pass, ... }`. Largest passing n. */
async function ramp(ns, trial, log, label) {
  let best = 0; let failAt = null; const steps = [];
  for (const n of ns) {
    const r = await trial(n);
    steps.push({ n, ...r });
    log(`  ${label} N=${n}: ${r.pass ? 'pass' : 'FAIL'} ${r.note}`);
    if (!r.pass) { failAt = n; break; }
    best = n;
  }
  if (failAt !== null && best > 0 && failAt - best > Math.max(2, best / 4)) {
    const n = Math.round((best + failAt) / 2);
    const r = await trial(n);
    steps.push({ n, ...r });
    log(`  ${label} N=${n}: ${r.pass ? 'pass' : 'FAIL'} ${r.note}`);
    if (r.pass) best = n;
  }
  return { best, bounded: failAt !== null, steps };
}

/** Later runs skip the steps far below what the first run reached (they pass by a wide margin). */
function later(ns, runs) {
  if (!runs.length || !runs[0].best) return ns;
  const skipped = ns.filter((n) => n >= runs[0].best / 4);
  return skipped.length ? skipped : ns;
}

async function audience(server, hd, cfg, log) {
  const pid = server.pid;
  const trial = async (n) => {
    const s = newSession();
    const base = server.url;
    // Three segments are there before the viewers join; the broadcaster then runs as long as they do.
    const stopAt = Date.now() + cfg.audience.stepSeconds * 1000;
    const bst = { put: [], errors: 0 };
    const now = Date.now();
    for (let seq = 0; seq < 3; seq++) {
      await mustPut(base, s, seq, hd, { duration: SEGMENT_S, pdt: new Date(now - (3 - seq) * SEGMENT_S * 1000) });
    }
    const pushing = (async () => {
      const a = agent(1);
      for (let seq = 3; Date.now() < stopAt; seq++) {
        await sleep(now + (seq - 2) * SEGMENT_S * 1000 - Date.now());
        const r = await putSegment(base, s, seq, hd, { duration: SEGMENT_S, agent: a });
        bst.put.push(r.ms);
        if (r.status !== 201) bst.errors++;
      }
      a.destroy();
    })();
    const st = { playlist: [], segment: [], errors: 0, bytes: 0, lastError: null };
    const srv = cpuMeter(pid);
    const cli = process.cpuUsage();
    const t0 = performance.now();
    await Promise.all(Array.from({ length: n }, () => viewer(`${base}/playlist/${s.id}.m3u8`, stopAt, st)));
    const wall = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cli);
    const server_cpu = srv.stop().percent;
    await pushing;
    const seg_p99 = percentile(st.segment, 99);
    const pass = st.errors === 0 && bst.errors === 0 && st.segment.length > 0 && seg_p99 < 1000;
    const r = {
      pass, errors: st.errors + bst.errors, last_error: st.lastError, segments: st.segment.length,
      seg_p50_ms: percentile(st.segment, 50), seg_p99_ms: seg_p99, playlist_p99_ms: percentile(st.playlist, 99),
      mib_per_s: st.bytes / wall / 1048576, server_cpu_pct: server_cpu,
      client_cpu_pct: (100 * (cpu.user + cpu.system) / 1e6) / wall,
    };
    r.note = `segment p50 ${r.seg_p50_ms.toFixed(0)} ms p99 ${seg_p99.toFixed(0)} ms, ${r.errors} errors, `
      + `${r.mib_per_s.toFixed(0)} MiB/s, host CPU ${server_cpu.toFixed(0)}%, bench client CPU ${r.client_cpu_pct.toFixed(0)}%`
      + (st.lastError ? ` (${st.lastError})` : '');
    return r;
  };
  const runs = [];
  for (let i = 0; i < cfg.runs; i++) runs.push(await ramp(later(cfg.audience.ns, runs), trial, log, `audience run ${i + 1}`));
  return { viewers: summary(runs.map((r) => r.best)), runs, step_seconds: cfg.audience.stepSeconds };
}

async function ingest(server, hd, cfg, log) {
  const base = server.url;
  const putRuns = [];
  for (let i = 0; i < cfg.runs; i++) {
    const s = newSession();
    const a = agent(1);
    const ms = [];
    const now = Date.now();
    for (let seq = 0; seq < cfg.ingest.puts; seq++) {
      const r = await putSegment(base, s, seq, hd, { duration: SEGMENT_S, agent: a, pdt: new Date(now + seq * 2000) });
      if (r.status !== 201) throw new Error(`PUT answered ${r.status || r.error}: ${r.body?.toString().slice(0, 200)}`);
      ms.push(r.ms);
    }
    a.destroy();
    putRuns.push({ p50: percentile(ms, 50), p99: percentile(ms, 99) });
    log(`  ingest PUT run ${i + 1}: p50 ${putRuns.at(-1).p50.toFixed(1)} ms, p99 ${putRuns.at(-1).p99.toFixed(1)} ms over ${ms.length} PUTs`);
  }
  const pid = server.pid;
  const trial = async (n) => {
    const st = { put: [], errors: 0, lastError: null };
    const srv = cpuMeter(pid);
    const stopAt = Date.now() + cfg.broadcasters.stepSeconds * 1000;
    await Promise.all(Array.from({ length: n },
      (_, k) => broadcaster(base, newSession(), hd, stopAt, st, (k * SEGMENT_S * 1000) / n)));
    const p99 = percentile(st.put, 99);
    // Keeping up means each PUT finishes before the next segment is due.
    const pass = st.errors === 0 && p99 < SEGMENT_S * 1000;
    const server_cpu = srv.stop().percent;
    return { pass, errors: st.errors, put_p50_ms: percentile(st.put, 50), put_p99_ms: p99, puts: st.put.length,
      server_cpu_pct: server_cpu,
      note: `PUT p50 ${percentile(st.put, 50).toFixed(0)} ms p99 ${p99.toFixed(0)} ms, ${st.errors} errors, host CPU ${server_cpu.toFixed(0)}%`
        + (st.lastError ? ` (${st.lastError})` : '') };
  };
  const runs = [];
  for (let i = 0; i < cfg.runs; i++) runs.push(await ramp(later(cfg.broadcasters.ns, runs), trial, log, `broadcasters run ${i + 1}`));
  return {
    segment_bytes: hd.length, puts_per_run: cfg.ingest.puts,
    put_p50_ms: summary(putRuns.map((r) => r.p50)), put_p99_ms: summary(putRuns.map((r) => r.p99)),
    broadcasters: summary(runs.map((r) => r.best)), broadcaster_runs: runs, step_seconds: cfg.broadcasters.stepSeconds,
  };
}

/** Run part 2 against a fresh host (idle timeout long enough that test streams stay live). */
export async function runServer({ root, cfg, log }) {
  const hd = segment(root, 'hd2s');
  const server = await startHost(root, 'server', { idle_timeout: 3600 });
  try {
    log('server: GET segment and playlist, ours vs nginx');
    const get = await getVsNginx(server.url, server.pid, hd, cfg, log);
    log('server: simulated audience');
    const aud = await audience(server, hd, cfg, log);
    log('server: ingest');
    const ing = await ingest(server, hd, cfg, log);
    return { get, audience: aud, ingest: ing };
  } finally {
    await server.stop();
  }
}
