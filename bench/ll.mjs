//! Part 5, low-latency HLS on the server: an audience held at the live edge (blocking playlist
//! reloads and held part requests, as hls.js makes them in low-latency mode), what each held request
//! costs the host, and the delta (`_HLS_skip=YES`) reload of a long retention-0 stream.
//!
//! The broadcaster is simulated (wire contract v2): a 2 s 720p segment from bench/lib/media.mjs cut at
//! MPEG-TS packet boundaries into parts, one part every part target, then a commit. The server only
//! checks the TS shape, so the cut does not matter for what is measured here.

import { readFileSync } from 'node:fs';
import { startHost } from './lib/host.mjs';
import { request, agent, sleep, connection } from './lib/http.mjs';
import { newSession } from './lib/stream.mjs';
import { segment } from './lib/media.mjs';
import { percentile, summary } from './lib/stats.mjs';
import { cpuMeter, rssBytes } from './lib/proc.mjs';

export const SEGMENT_S = 2;
export const PART_MS = 334;
export const PARTS = 6; // 6 x 334 ms = 2.004 s, rounds to the 2 s target
const TS = 188;
/** A step passes only if its viewers fetched at least this share of the parts the broadcaster made. */
const KEEP_UP = 0.9;

/** `bytes` cut into `n` runs of whole TS packets. */
export function cutParts(bytes, n) {
  const packets = bytes.length / TS;
  return Array.from({ length: n }, (_, i) =>
    bytes.subarray(Math.floor((i * packets) / n) * TS, Math.floor(((i + 1) * packets) / n) * TS));
}

/** PUT part `part` of segment `seq` (wire contract v2). */
export function putPart(base, s, seq, part, bytes, { agent: a, pdt = new Date(), partMs = PART_MS, targetMs = PART_MS } = {}) {
  const headers = {
    'content-type': 'video/mp2t', 'content-length': bytes.length,
    'x-duration': (partMs / 1000).toFixed(3), 'x-part-target': (targetMs / 1000).toFixed(3),
    'x-target-duration': String(SEGMENT_S),
  };
  if (part === 0) {
    headers['x-independent'] = '1';
    headers['x-program-date-time'] = pdt.toISOString();
  }
  return request(`${base}/ingest/${s.secret}/${seq}/${part}.ts`, { method: 'PUT', agent: a, body: bytes, headers });
}

/** Seal segment `seq` from its `parts` parts. */
export const commit = (base, s, seq, parts, a) =>
  request(`${base}/ingest/${s.secret}/${seq}/commit`, { method: 'POST', agent: a, headers: { 'x-parts': String(parts) } });

async function mustOk(r, what) {
  if (r.status !== 201 && r.status !== 200) {
    throw new Error(`${what} answered ${r.status || r.error}: ${r.body?.toString().slice(0, 200) ?? ''}`);
  }
  return r;
}

/** A broadcaster in real time: a part every PART_MS, a commit after each segment's last part. */
export async function broadcast(base, s, parts, stopAt, st, firstSeq = 0) {
  const a = agent(1);
  const start = Date.now();
  let n = 0;
  for (let seq = firstSeq; Date.now() < stopAt; seq++) {
    for (let part = 0; part < PARTS; part++, n++) {
      await sleep(start + n * PART_MS - Date.now());
      const r = await putPart(base, s, seq, part, parts[part], { agent: a, pdt: new Date() });
      st.put.push(r.ms);
      st.stored?.set(`${seq}.${part}`, Date.now());
      if (r.status !== 201 && r.status !== 200) { st.errors++; st.lastError = `part PUT ${r.status || r.error}`; }
    }
    const c = await commit(base, s, seq, PARTS, a);
    if (c.status !== 201 && c.status !== 200) { st.errors++; st.lastError = `commit ${c.status || c.error}`; }
  }
  a.destroy();
}

/** The next part a player asks for: from `EXT-X-PRELOAD-HINT`, as `{ msn, part, uri }`. */
export function preloadHint(text, base) {
  const m = text.match(/#EXT-X-PRELOAD-HINT:TYPE=PART,URI="([^"]+)"/);
  if (!m) return null;
  const k = m[1].match(/\/(\d+)\.(\d+)\.ts$/);
  return k ? { msn: Number(k[1]), part: Number(k[2]), uri: new URL(m[1], base).href } : null;
}

/**
 * What a live playlist says about the edge: `parts` (msn -> part indexes listed), `sealed` (the msns
 * listed as whole segments) and the preload hint.
 */
export function edgeOf(text, base) {
  const parts = new Map();
  const sealed = new Set();
  for (const m of text.matchAll(/#EXT-X-PART:[^\n]*URI="[^"]*\/(\d+)\.(\d+)\.ts"/g)) {
    const msn = Number(m[1]);
    if (!parts.has(msn)) parts.set(msn, new Set());
    parts.get(msn).add(Number(m[2]));
  }
  for (const m of text.matchAll(/^\/chunks\/[0-9a-f]+\/(\d+)\.ts$/gm)) sealed.add(Number(m[1]));
  return { parts, sealed, hint: preloadHint(text, base) };
}

/**
 * The part to load after `at`, as a player decides it from its newest playlist `edge`: the next part
 * of the segment when listed or hinted, part 0 of the next segment once the segment is listed sealed
 * without more (or that part is the hint); `null` when the playlist does not say yet.
 */
export function successor(at, edge) {
  const same = { msn: at.msn, part: at.part + 1 };
  const next = { msn: at.msn + 1, part: 0 };
  const is = (a, b) => b && a.msn === b.msn && a.part === b.part;
  if (edge.parts.get(at.msn)?.has(same.part) || is(same, edge.hint)) return same;
  if (edge.sealed.has(at.msn) || edge.parts.has(next.msn) || is(next, edge.hint)) return next;
  return null;
}

/**
 * One low-latency viewer until `stopAt`, as hls.js plays in low-latency mode: a playlist loader
 * that makes blocking reloads (delta updates, `_HLS_skip=YES`) for the part named by
 * `EXT-X-PRELOAD-HINT`, one after another; and, beside it, a part loader that loads the parts in
 * order from where it joined (the hint of its first playlist): a listed part at once, the hinted
 * one held by the server until it exists, and otherwise it waits for the next playlist
 * ([`successor`]). A part is never skipped: one the server answers late is still loaded, so a
 * viewer the server serves too slowly falls behind and fetches fewer parts in the step. A hinted
 * part that never comes (the broadcaster sealed its segment first) is answered 404, and the
 * playlists must then list its segment sealed without it (anything else is an error). Each part's
 * lateness is the time from its upload's answer to its delivery to this viewer.
 */
export async function viewer(base, id, stopAt, st, stored) {
  // Two connections, as a player's playlist and part loaders have.
  const lists = connection(base);
  const loads = connection(base);
  const path = `/playlist/${id}.m3u8`;
  const p = await lists.get(path);
  let edge = p.status === 200 ? edgeOf(p.body.toString(), base) : null;
  if (!edge?.hint) {
    st.errors++; st.lastError = `playlist ${p.status || p.error} without a preload hint`;
    lists.close();
    loads.close();
    return;
  }
  let failed = false;
  let updated = () => {};
  const nextUpdate = () => new Promise((r) => { updated = r; });
  const playlists = (async () => {
    while (Date.now() < stopAt && !failed) {
      const { msn, part } = edge.hint;
      const reload = await lists.get(`${path}?_HLS_msn=${msn}&_HLS_part=${part}&_HLS_skip=YES`);
      st.requests++;
      st.reload.push(reload.ms);
      const next = reload.status === 200 ? edgeOf(reload.body.toString(), base) : null;
      if (!next?.hint) {
        st.errors++; st.lastError = `blocking reload ${reload.status || reload.error}${next ? ' without a preload hint' : ''}`;
        failed = true;
      } else {
        edge = next;
      }
      updated();
    }
    updated();
  })();
  const loader = (async () => {
    let at = { msn: edge.hint.msn, part: edge.hint.part };
    st.joined.push(at);
    while (Date.now() < stopAt && !failed) {
      const r = await loads.get(`/chunks/${id}/${at.msn}.${at.part}.ts`, { discard: true });
      st.requests++;
      if (r.status === 200) {
        if (Date.now() <= stopAt) st.fetched++;
        st.part.push(r.ms);
        st.bytes += r.bytes;
        const t = stored.get(`${at.msn}.${at.part}`);
        if (t !== undefined) st.late.push(Date.now() - t);
      } else if (r.status === 404) {
        // Only a hinted part may never come (its segment was sealed first): the playlists that
        // follow must list the segment sealed without it.
        st.unused_hints++;
      } else {
        st.errors++; st.lastError = `part ${r.status || r.error}`;
        failed = true;
        break;
      }
      let next = successor(at, edge);
      for (let i = 0; !next && i < 3 && Date.now() < stopAt && !failed; i++) {
        await nextUpdate();
        next = successor(at, edge);
      }
      if (!next) break;
      if (r.status === 404 && !(edge.sealed.has(at.msn) && !edge.parts.get(at.msn)?.has(at.part))) {
        st.errors++; st.lastError = `part ${at.msn}.${at.part} answered 404 but not listed as sealed without it`;
        failed = true;
        break;
      }
      at = next;
    }
  })();
  await Promise.all([playlists, loader]);
  lists.close();
  loads.close();
}

async function audience(server, parts, cfg, log) {
  const pid = server.pid;
  const trial = async (n) => {
    const s = newSession();
    const base = server.url;
    const bst = { put: [], errors: 0, lastError: null, stored: new Map() };
    const st = { reload: [], part: [], late: [], joined: [], fetched: 0, requests: 0, errors: 0, bytes: 0, lastError: null, unused_hints: 0 };
    // The stream has run for a while: its window already holds `windowSegments` segments (uploaded
    // back to back), so every full playlist lists them all, as a 10-minute window does.
    const a = agent(1);
    for (let seq = 0; seq < cfg.ll.windowSegments; seq++) {
      for (let part = 0; part < PARTS; part++) await mustOk(await putPart(base, s, seq, part, parts[part], { agent: a }), `part ${seq}.${part}`);
      await mustOk(await commit(base, s, seq, PARTS, a), `commit ${seq}`);
    }
    a.destroy();
    const stopAt = Date.now() + cfg.ll.stepSeconds * 1000;
    const pushing = broadcast(base, s, parts, stopAt + 2 * PART_MS, bst, cfg.ll.windowSegments);
    // The viewers join a stream that has started: its playlist exists once the first segment is sealed.
    for (const until = Date.now() + 10_000; (await request(`${base}/playlist/${s.id}.m3u8`)).status !== 200;) {
      if (Date.now() > until) throw new Error('the low-latency stream had no playlist 10 s after its first part');
      await sleep(PART_MS / 2);
    }
    const rss0 = rssBytes(pid);
    let rssMax = rss0;
    const rssTimer = setInterval(() => { rssMax = Math.max(rssMax, rssBytes(pid)); }, 100);
    const srv = cpuMeter(pid);
    const own = process.cpuUsage();
    const t0 = performance.now();
    await Promise.all(Array.from({ length: n }, () => viewer(base, s.id, stopAt, st, bst.stored)));
    const wall = (performance.now() - t0) / 1000;
    clearInterval(rssTimer);
    const server_cpu = srv.stop().percent;
    // The load generator shares the two cores: its own CPU says how much of them the host had.
    const used = process.cpuUsage(own);
    const client_cpu = ((used.user + used.system) / 1e6 / wall) * 100;
    await pushing;
    const p99 = percentile(st.part, 99);
    // Keeping up: a viewer loads every part in order from the one it joined at, so one that keeps up
    // has fetched, by the end of the step, every part the broadcaster made since (but the one in
    // flight); one the server answers too slowly falls behind and has fewer. Lateness says how far
    // behind: from a part's upload to its delivery, p99 under 1 s as well.
    const madeInStep = [...bst.stored].filter(([, t]) => t <= stopAt).map(([k]) => k.split('.').map(Number));
    const made = st.joined.reduce((sum, j) =>
      sum + madeInStep.filter(([msn, part]) => msn > j.msn || (msn === j.msn && part >= j.part)).length, 0);
    const keptUp = made ? st.fetched / made : 0;
    const late99 = percentile(st.late, 99);
    const pass = st.errors === 0 && bst.errors === 0 && st.part.length > 0 && p99 < 1000 && late99 < 1000 && keptUp >= KEEP_UP;
    const r = {
      pass, errors: st.errors + bst.errors, last_error: st.lastError ?? bst.lastError,
      parts: st.part.length, unused_hints: st.unused_hints, part_p50_ms: percentile(st.part, 50), part_p99_ms: p99,
      reload_p50_ms: percentile(st.reload, 50), reload_p99_ms: percentile(st.reload, 99),
      late_p50_ms: percentile(st.late, 50), late_p99_ms: late99,
      requests_per_viewer_s: st.requests / n / wall, kept_up: keptUp, server_cpu_pct: server_cpu,
      client_cpu_pct: client_cpu,
      // Every viewer holds about two requests at a time; the growth is theirs.
      host_kib_per_held: ((rssMax - rss0) / 1024) / (2 * n),
    };
    r.note = `part p50 ${r.part_p50_ms.toFixed(0)} ms p99 ${p99.toFixed(0)} ms, upload to delivery p50 ${r.late_p50_ms.toFixed(0)} ms `
      + `p99 ${late99.toFixed(0)} ms, reload p99 ${r.reload_p99_ms.toFixed(0)} ms, `
      + `${(keptUp * 100).toFixed(0)}% of the parts fetched, `
      + `${r.requests_per_viewer_s.toFixed(1)} req/s per viewer, host CPU ${server_cpu.toFixed(0)}%, load generator CPU ${client_cpu.toFixed(0)}%, `
      + `host +${r.host_kib_per_held.toFixed(0)} KiB per held request, ${r.unused_hints} hinted parts never made (404), ${r.errors} errors`
      + (r.last_error ? ` (${r.last_error})` : '');
    return r;
  };
  const runs = [];
  for (let i = 0; i < cfg.runs; i++) {
    const steps = [];
    let best = 0;
    for (const n of cfg.ll.ns) {
      const r = await trial(n);
      steps.push({ n, ...r });
      log(`  low-latency audience run ${i + 1} N=${n}: ${r.pass ? 'pass' : 'FAIL'} ${r.note}`);
      if (!r.pass) break;
      best = n;
    }
    runs.push({ best, steps });
  }
  return {
    viewers: summary(runs.map((r) => r.best)), runs, step_seconds: cfg.ll.stepSeconds, part_ms: PART_MS, parts: PARTS,
    window_segments: cfg.ll.windowSegments, at_best: atBest(runs),
  };
}

/**
 * The figures of the step at the median run's best (the audience figure reported), over every run
 * that made that step: what the server did at the audience it is credited with.
 */
export function atBest(runs) {
  const bests = runs.map((r) => r.best).sort((x, y) => x - y);
  const n = bests[Math.floor((bests.length - 1) / 2)];
  const steps = runs.map((r) => r.steps.find((s) => s.n === n)).filter(Boolean);
  if (!steps.length) return null;
  const of = (k) => summary(steps.map((s) => s[k] ?? 0));
  return {
    n, steps: steps.length, passed: steps.filter((s) => s.pass).length,
    requests_per_viewer_s: of('requests_per_viewer_s'), part_p99_ms: of('part_p99_ms'), reload_p99_ms: of('reload_p99_ms'),
    late_p99_ms: of('late_p99_ms'), host_kib_per_held: of('host_kib_per_held'), server_cpu_pct: of('server_cpu_pct'),
    client_cpu_pct: of('client_cpu_pct'),
  };
}

/**
 * A retention-0 v2 stream of `count` sealed segments, then the full and the delta reload. To keep the
 * set-up short each segment is one 2 s part (a part target of 2 s): the playlist's length, which is
 * what a delta update saves, is the same as with 334 ms parts.
 */
async function skipCost(root, parts, cfg, log) {
  const server = await startHost(root, 'll-skip', { stream_retention: 0, idle_timeout: 3600 });
  try {
    const s = newSession();
    const a = agent(1);
    const small = parts[0];
    const t0 = Date.now() - cfg.ll.skipSegments * SEGMENT_S * 1000;
    const whole = { agent: a, partMs: SEGMENT_S * 1000, targetMs: SEGMENT_S * 1000 };
    for (let seq = 0; seq < cfg.ll.skipSegments; seq++) {
      const pdt = new Date(t0 + seq * SEGMENT_S * 1000);
      await mustOk(await putPart(server.url, s, seq, 0, small, { ...whole, pdt }), `part ${seq}.0`);
      await mustOk(await commit(server.url, s, seq, 1, a), `commit ${seq}`);
    }
    a.destroy();
    const out = {};
    for (const [name, q] of [['full', ''], ['skip', '?_HLS_skip=YES']]) {
      const url = `${server.url}/playlist/${s.id}.m3u8${q}`;
      const first = await request(url);
      if (first.status !== 200) throw new Error(`${name} reload answered ${first.status}`);
      if (name === 'skip' && !first.body.toString().includes('#EXT-X-SKIP:SKIPPED-SEGMENTS=')) {
        throw new Error('the delta reload has no EXT-X-SKIP');
      }
      const ms = [];
      const b = agent(1);
      for (let i = 0; i < cfg.ll.skipRequests; i++) ms.push((await request(url, { agent: b, discard: true })).ms);
      b.destroy();
      out[name] = { bytes: first.bytes, p50_ms: percentile(ms, 50), p99_ms: percentile(ms, 99), requests: ms.length };
      log(`  ${cfg.ll.skipSegments}-segment retention-0 stream, ${name} reload: ${first.bytes} bytes, `
        + `p50 ${out[name].p50_ms.toFixed(2)} ms, p99 ${out[name].p99_ms.toFixed(2)} ms over ${ms.length} requests`);
    }
    return { segments: cfg.ll.skipSegments, ...out };
  } finally {
    await server.stop();
  }
}

/**
 * Key-value reads per held request: one step of `n` viewers against a host that logs each
 * request's reads (`CHALKSTREAM_COUNT_KV=1`, a line per request, so not in the timed audience),
 * averaged over the blocking reloads and over the part requests.
 */
async function countReads(root, parts, cfg, log, n) {
  const server = await startHost(root, 'll-reads', { idle_timeout: 3600 }, { CHALKSTREAM_COUNT_KV: '1' });
  try {
    await audience(server, parts, { ...cfg, runs: 1, ll: { ...cfg.ll, ns: [n] } }, () => {});
  } finally {
    await server.stop();
  }
  const reloads = [];
  const partReads = [];
  for (const line of readFileSync(server.log, 'utf8').split('\n')) {
    const m = line.match(/kv GET (\S+): (\d+) reads/);
    if (!m) continue;
    if (/^\/playlist\/[0-9a-f]+\.m3u8\?_HLS_msn=\d+&_HLS_part=\d+/.test(m[1])) reloads.push(Number(m[2]));
    else if (/^\/chunks\/[0-9a-f]+\/\d+\.\d+\.ts$/.test(m[1])) partReads.push(Number(m[2]));
  }
  const of = (xs) => ({ requests: xs.length, mean: xs.reduce((a, b) => a + b, 0) / (xs.length || 1), p99: percentile(xs, 99), max: Math.max(...xs) });
  const r = { viewers: n, reload: of(reloads), part: of(partReads) };
  log(`  key-value reads at ${n} viewers: blocking reload mean ${r.reload.mean.toFixed(1)} (p99 ${r.reload.p99}, max ${r.reload.max}, `
    + `${r.reload.requests} requests), part request mean ${r.part.mean.toFixed(1)} (p99 ${r.part.p99}, max ${r.part.max}, ${r.part.requests} requests)`);
  return r;
}

/** Run part 5 against a fresh host. */
export async function runLowLatency({ root, cfg, log }) {
  const parts = cutParts(segment(root, 'hd2s'), PARTS);
  const server = await startHost(root, 'll', { idle_timeout: 3600 });
  let aud;
  try {
    log('low latency: audience held at the live edge');
    aud = await audience(server, parts, cfg, log);
  } finally {
    await server.stop();
  }
  log('low latency: key-value reads per held request');
  aud.reads = await countReads(root, parts, cfg, log, cfg.ll.readsViewers ?? 40);
  log('low latency: delta reload of a long retention-0 stream');
  const skip = await skipCost(root, parts, cfg, log);
  return { audience: aud, skip, cmd: 'scripts/bench (bench/ll.mjs)' };
}
