//! Soak (issue "trust under stress"): the real extension streams a tab for a long time (2 hours by
//! default) at default settings, with low-latency viewers attached, against a host at default
//! settings, and says whether anything it acknowledged went missing and whether memory stays flat.
//!
//! Set-up: one host (`startHost`, every Spin variable at its default: retention 10 minutes, idle
//! timeout 30 s); the extension in its own Chromium (`launchBroadcaster`, as bench/client.mjs runs
//! it) streaming a busy tab (bench/clock/clock.html?busy=1) at its default configuration
//! (bench/client.mjs `DEFAULT_CONFIG`: 720p, 2 s segments, low latency on); VIEWERS simulated
//! low-latency viewers (bench/ll.mjs `viewer`: blocking playlist reloads and held part requests,
//! as hls.js makes them), each restarted if it gives up.
//!
//! Every SAMPLE_S seconds from the start of the broadcast (every minute by default) one row:
//! - extension PSS: the extension renderer processes' PSS (/proc/PID/smaps_rollup), as
//!   bench/client.mjs measures it, and the offscreen document's JS heap from its status; beside them
//!   the extension module's own wasm linear memory (`wasm_memory_bytes` of the status: Rust's heap, which
//!   never shrinks), the ffmpeg.wasm workers alive (threads named DedicatedWorker in the extension's
//!   renderer), that renderer's PSS alone, and the browser's GPU and utility processes' PSS;
//!   CHALKSTREAM_SOAK_MEMDUMP=1 adds the renderer's allocators from a memory-infra dump (`memoryDump`;
//!   CHALKSTREAM_SOAK_DUMPS=FILE also writes every entry of each dump there, a JSON line a row),
//!   CHALKSTREAM_SOAK_MAPS=dir writes its mappings every row (diff two to see which region grows);
//! - host RSS: VmRSS of the host process (/proc/PID/status), and beside it the same split by
//!   mapping (`rssSplit`): the pooled instance slots' reservations and everything else;
//! - store keys and bytes: `SELECT count(*), sum(length(value))` on the host's SQLite file
//!   (`sqlite3 -readonly`);
//! - acknowledged: the seqs the host answered 2xx for (a v2 `commit`, or a v1 whole-segment PUT),
//!   read from the host's request log as it is written (polled every second, so each seq gets
//!   the time it was acknowledged to within about a second); beside it the extension's own count
//!   (`segments_sent`, `parts_sent`, `segments_waiting`, `segments_dropped` from its status);
//! - listed / missing: the full playlist is read and every acknowledged seq still inside
//!   retention (acknowledged less than retention - MARGIN_S ago) must be listed; each newly
//!   acknowledged seq is also fetched once (`/chunks/{id}/{seq}.ts`, 200 with a body);
//! - the viewers' parts fetched and errors since the last row.
//!
//! Lost: at the end, with the broadcast still running, the same check over the whole window,
//! every due seq listed and fetched again. A seq is *lost* if at the end it is due and not listed
//! or not fetchable, or if any check during the run found it due and missing or unfetchable (a seq
//! that went missing and came back still counts). Seqs the extension gave up (gaps) were never
//! acknowledged and do not count; `segments_dropped` says how many.
//!
//! Verdicts: extension PSS growth < 20 MiB, from the start (WARMUP_MIN, default 2: ffmpeg.wasm's
//! start-up is over) to the end; host RSS growth < 10%, from retention + WARMUP_MIN (12 minutes: the
//! store's window is full) when the run gets there, else from the same start as the PSS; 0 lost.
//! Each end is the median of the rows in its ENDPOINT_MIN minutes (default 5), not one row: the
//! renderers' and the allocators' transient peaks (~40 MiB for a minute, every few minutes) are
//! not growth, and a single row at either end made the figure swing by tens of MiB either way.
//!
//! `scripts/bench --soak` (or `node bench/soak.mjs`) runs it; CHALKSTREAM_SOAK_MIN sets the
//! duration in minutes (default 120), CHALKSTREAM_SOAK_SAMPLE_S the row interval (default 60),
//! CHALKSTREAM_SOAK_VIEWERS the viewers (default 5). Prints a row per sample and a summary, writes
//! target/bench/soak.json, exits 1 if a verdict fails.

import { execFile } from 'node:child_process';
import { appendFileSync, closeSync, mkdirSync, openSync, readFileSync, readSync, fstatSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { startHost } from './lib/host.mjs';
import { startClockServer } from './lib/clock-server.mjs';
import { launchBroadcaster } from './lib/broadcaster.mjs';
import { request, sleep } from './lib/http.mjs';
import { median } from './lib/stats.mjs';
import { descendants, mappings, pssBytes, rssBytes, rssSplit, threadCount } from './lib/proc.mjs';
import { percentile } from './lib/stats.mjs';
import { CONFIGS, DEFAULT_CONFIG, PRESETS, describeConfig, mediaFollower } from './client.mjs';
import { viewer } from './ll.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const run = promisify(execFile);
const MIB = 1048576;

const env = (name, fallback) => {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? v : fallback;
};
const MINUTES = env('CHALKSTREAM_SOAK_MIN', 120);
const SAMPLE_S = env('CHALKSTREAM_SOAK_SAMPLE_S', 60);
/** Minutes of rows whose median is each end of a verdict's growth. */
const ENDPOINT_MIN = env('CHALKSTREAM_SOAK_ENDPOINT_MIN', 5);
const VIEWERS = Math.round(env('CHALKSTREAM_SOAK_VIEWERS', 5));
const WARMUP_MIN = env('CHALKSTREAM_SOAK_WARMUP_MIN', 2);
/** The host's default retention (spin.toml `stream_retention`), which this run leaves as it is. */
const RETENTION_MIN = 10;
/** A seq acknowledged at t is due (must be listed) while now - t < retention - MARGIN_S. */
const MARGIN_S = 30;
/** The verdicts' bounds. */
export const BOUNDS = { pss_growth_mib: 20, host_rss_growth_pct: 10, lost: 0 };

/** Follows the host's request log as it is written: the seqs acknowledged (2xx) and when. */
function ackFollower(path) {
  const fd = openSync(path, 'r');
  let pos = 0;
  let rest = '';
  const acked = new Map(); // seq -> ms when first seen acknowledged
  const counts = { commits: 0, segment_puts: 0, parts: 0, gaps: 0, refused: 0, retried: 0, last_refused: null };
  const buf = Buffer.allocUnsafe(1 << 20);
  const drain = () => {
    for (;;) {
      if (fstatSync(fd).size <= pos) break;
      const n = readSync(fd, buf, 0, buf.length, pos);
      if (n <= 0) break;
      pos += n;
      const lines = (rest + buf.toString('utf8', 0, n)).split('\n');
      rest = lines.pop();
      const now = Date.now();
      for (const line of lines) {
        const m = line.match(/^(PUT|POST) \/ingest\/[^/ ]+\/(\d+)(\/commit|\/gap|\/\d+\.ts|\.ts) (\d{3}) /);
        if (!m) continue;
        const seq = Number(m[2]);
        const ok = m[4].startsWith('2');
        if (!ok) { counts.refused++; counts.last_refused = line.replace(/ [\d.]+ms$/, ''); continue; }
        if (m[3] === '/gap') { counts.gaps++; continue; }
        if (m[3].endsWith('.ts') && m[3].startsWith('/')) { counts.parts++; continue; }
        if (m[3] === '/commit') counts.commits++; else counts.segment_puts++;
        if (acked.has(seq)) counts.retried++; else acked.set(seq, now);
      }
    }
  };
  return { drain, acked, counts, close: () => closeSync(fd) };
}

/** The seqs a playlist lists as whole segments. */
function listedSeqs(text) {
  const out = new Set();
  for (const m of text.matchAll(/^\/chunks\/[0-9a-f]+\/(\d+)\.ts$/gm)) out.add(Number(m[1]));
  return out;
}

/** Keys and value bytes in the host's store (read-only; the host keeps writing). */
async function storeSize(db) {
  try {
    const { stdout } = await run('sqlite3', ['-readonly', '-cmd', '.timeout 10000', db,
      'SELECT count(*) || \' \' || coalesce(sum(length(value)), 0) FROM spin_key_value']);
    const [keys, bytes] = stdout.trim().split(' ').map(Number);
    return { keys, bytes };
  } catch { return { keys: NaN, bytes: NaN }; }
}

/**
 * Check the window: every acknowledged seq due at the time of the playlist read must be listed;
 * `fetch` says which of the due seqs to fetch. Adds what fails to `lost` (seq -> reason).
 */
async function checkWindow(base, id, acks, lost, fetch) {
  acks.drain(); // what was acknowledged before the playlist is read
  const snapshot = [...acks.acked];
  const r = await request(`${base}/playlist/${id}.m3u8`, { timeoutMs: 30_000 });
  const now = Date.now();
  const listed = r.status === 200 ? listedSeqs(r.body.toString()) : new Set();
  const due = snapshot.filter(([, t]) => now - t < (RETENTION_MIN * 60 - MARGIN_S) * 1000).map(([s]) => s);
  let missing = 0;
  let unfetchable = 0;
  let fetched = 0;
  for (const seq of due) {
    if (!listed.has(seq)) {
      missing++;
      if (!lost.has(seq)) lost.set(seq, `not listed at ${new Date(now).toISOString()} (playlist ${r.status || r.error})`);
      continue;
    }
    if (!fetch(seq)) continue;
    const c = await request(`${base}/chunks/${id}/${seq}.ts`, { discard: true, timeoutMs: 30_000 });
    fetched++;
    if (c.status !== 200 || c.bytes === 0) {
      unfetchable++;
      if (!lost.has(seq)) lost.set(seq, `chunk answered ${c.status || c.error} with ${c.bytes} bytes`);
    }
  }
  return { listed: listed.size, due: due.length, missing, unfetchable, fetched, playlist_status: r.status };
}

/** `VIEWERS` low-latency viewers (bench/ll.mjs) until `stopAt`, each started again if it gives up. */
function audience(base, id, stopAt, st) {
  const one = async () => {
    while (Date.now() < stopAt) {
      await viewer(base, id, stopAt, st, new Map());
      if (Date.now() < stopAt) { st.restarts++; await sleep(1000); }
    }
  };
  return Promise.all(Array.from({ length: VIEWERS }, one));
}

/**
 * CHALKSTREAM_SOAK_MEMDUMP=1: every row also asks Chromium for a memory-infra dump (over the DevTools
 * protocol, as chrome://tracing's memory-infra does; not deterministic, so no garbage collection is forced
 * and the PSS figures stay comparable; `gc` forces one, to see what stays live) and adds the offscreen
 * renderer's allocators: Blink's garbage-collected
 * heap (`blink_gc`), V8, PartitionAlloc's ArrayBuffer partition and malloc, in MiB.
 */
const MEMDUMP = ['1', 'gc'].includes(process.env.CHALKSTREAM_SOAK_MEMDUMP);
/** CHALKSTREAM_SOAK_MEMDUMP=gc: Chromium collects garbage before each dump, so its figures are what is live. */
const MEMDUMP_GC = process.env.CHALKSTREAM_SOAK_MEMDUMP === 'gc';
const DUMP_ALLOCATORS = ['blink_gc', 'v8', 'partition_alloc/partitions/array_buffer', 'malloc'];

/** One memory-infra dump: `{ pid: { allocator: bytes } }` for `DUMP_ALLOCATORS`. */
async function memoryDump(session) {
  const events = [];
  const onData = (e) => events.push(...e.value);
  session.on('Tracing.dataCollected', onData);
  const done = new Promise((r) => session.once('Tracing.tracingComplete', r));
  await session.send('Tracing.start', { transferMode: 'ReportEvents', traceConfig: { recordMode: 'recordAsMuchAsPossible',
    includedCategories: ['disabled-by-default-memory-infra'], excludedCategories: ['*'], memoryDumpConfig: { triggers: [] } } });
  await session.send('Tracing.requestMemoryDump', { deterministic: MEMDUMP_GC, levelOfDetail: 'light' });
  await session.send('Tracing.end');
  await done;
  session.off('Tracing.dataCollected', onData);
  const out = {};
  const all = {};
  for (const ev of events) {
    const a = ev.args?.dumps?.allocators;
    if (!a) continue;
    const p = (out[ev.pid] ??= {});
    for (const name of DUMP_ALLOCATORS) {
      const v = a[name]?.attrs?.size?.value;
      if (v !== undefined) p[name] = parseInt(v, 16);
    }
    if (DUMPS_FILE) {
      const q = (all[ev.pid] ??= {});
      for (const [name, entry] of Object.entries(a)) {
        const size = entry?.attrs?.size?.value;
        const count = entry?.attrs?.object_count?.value;
        if (size !== undefined || count !== undefined) {
          q[name] = [size === undefined ? null : parseInt(size, 16), count === undefined ? null : parseInt(count, 16)];
        }
      }
    }
  }
  return DUMPS_FILE ? { ...out, all } : out;
}

/**
 * CHALKSTREAM_SOAK_DUMPS=FILE (with CHALKSTREAM_SOAK_MEMDUMP): every row also appends one JSON line to FILE
 * with every allocator entry of the offscreen renderer's dump, `{ minute, workers, entries: { name: [bytes,
 * objects] } }`, to see which part of an allocator grows.
 */
const DUMPS_FILE = process.env.CHALKSTREAM_SOAK_DUMPS || null;

/** CHALKSTREAM_SOAK_MAPS=dir: every row also writes each extension process's mappings (`mappings`) there. */
const MAPS_DIR = process.env.CHALKSTREAM_SOAK_MAPS || null;

/**
 * The extension's processes apart, and the browser's GPU and utility processes (capture, audio, network):
 * `offscreen` is the PSS of the extension renderer that runs the dedicated workers (ffmpeg.wasm's), `workers`
 * how many run (threads named DedicatedWorker), `each` every extension renderer's PSS in MiB by pid.
 */
function processSplit(extPids) {
  let workers = 0;
  let offscreen = NaN;
  let offscreenPid = extPids[0];
  const each = {};
  for (const pid of extPids) {
    const n = threadCount(pid, 'DedicatedWorker');
    const pss = pssBytes(pid);
    each[pid] = Math.round((pss / MIB) * 10) / 10;
    if (n > 0) { offscreen = pss; offscreenPid = pid; }
    workers += n;
  }
  // The browser process: the parent of the zygote that started the renderers.
  let gpu = 0;
  let utility = 0;
  const browser = extPids.length ? browserOf(extPids[0]) : null;
  if (browser) {
    for (const p of descendants(browser)) {
      const args = p.args.join(' ');
      if (args.includes('--type=gpu-process')) gpu += pssBytes(p.pid);
      else if (args.includes('--type=utility')) utility += pssBytes(p.pid);
    }
  }
  return { workers, offscreen, offscreenPid, gpu, utility, each };
}

/** The first ancestor of `pid` whose command line has no `--type=` (Chromium's browser process). */
function browserOf(pid) {
  for (let p = pid, hops = 0; p > 1 && hops < 16; hops++) {
    try {
      const args = readFileSync(`/proc/${p}/cmdline`, 'utf8');
      if (!args.includes('--type=')) return p;
      p = Number(readFileSync(`/proc/${p}/status`, 'utf8').match(/^PPid:\s+(\d+)/m)[1]);
    } catch { return null; }
  }
  return null;
}

const f1 = (x) => (Number.isFinite(x) ? x.toFixed(1) : '–');
const COLUMNS = [
  ['min', 5], ['ext PSS', 8], ['JS heap', 8], ['wasm', 6], ['ff wk', 6], ['off PSS', 8], ['gpu', 6], ['util', 6], ['host RSS', 9], ['pool', 6], ['other', 6], ['keys', 6], ['store MiB', 9], ['acked', 6],
  ['sent', 6], ['parts', 7], ['wait', 5], ['drop', 5], ['listed', 7], ['due', 5], ['missing', 8], ['viewer parts', 13],
  ['v.err', 6], ['part p99 ms', 12],
];
const row = (cells) => cells.map((c, i) => String(c).padStart(COLUMNS[i][1])).join(' ');

export async function runSoak({ root = ROOT, log = console.log } = {}) {
  const config = CONFIGS[DEFAULT_CONFIG];
  const preset = PRESETS[config.quality];
  const clock = await startClockServer();
  const server = await startHost(root, 'soak');
  const acks = ackFollower(server.log);
  const lost = new Map();
  const fetchedOnce = new Set();
  const samples = [];
  const vst = { reload: [], part: [], late: [], joined: [], fetched: 0, requests: 0, errors: 0, bytes: 0, lastError: null,
    unused_hints: 0, restarts: 0 };
  let b = null;
  let drainTimer = null;
  let dumpSession = null;
  let final = null;
  let streamId = null;
  try {
    log(`soak: ${MINUTES} min, ${describeConfig(config)}, 2 s segments, low latency on; host at default settings `
      + `(retention ${RETENTION_MIN} min); ${VIEWERS} low-latency viewers; a row every ${SAMPLE_S} s`);
    b = await launchBroadcaster({ serverUrl: server.url, segmentSeconds: 2, quality: config.quality,
      mic: config.mic, overlay: config.overlay });
    ({ streamId } = await b.streamTab(`${clock.url}/clock.html?busy=1`, { width: preset.width, height: preset.height }));
    const t0 = b.startedAt;
    drainTimer = setInterval(() => acks.drain(), 1000);
    // The viewers join once the playlist lists a segment (ffmpeg.wasm loads first), within a minute.
    const media = mediaFollower(`${server.url}/playlist/${streamId}.m3u8`);
    for (const until = Date.now() + 60_000; media.count === 0; await sleep(250)) {
      if (Date.now() > until) throw new Error('no segment reached the server within a minute of starting the broadcast');
      await media.poll();
    }
    const stopAt = t0 + MINUTES * 60_000;
    const viewing = audience(server.url, streamId, stopAt + 5000, vst);
    log(`soak: stream ${streamId} live ${((Date.now() - t0) / 1000).toFixed(1)} s after the start; host log ${server.log}`);
    log(row(COLUMNS.map(([n]) => n)));
    log(row(['', 'MiB', 'MiB', 'MiB', '', 'MiB', 'MiB', 'MiB', 'MiB', 'MiB', 'MiB', '', '', 'log', 'ext', 'ext', 'ext', 'ext', '', '', '', 'per row', '', '']));
    let lastFetched = 0;
    let lastErrors = 0;
    for (let k = 1; t0 + k * SAMPLE_S * 1000 <= stopAt; k++) {
      await sleep(t0 + k * SAMPLE_S * 1000 - Date.now());
      const pids = b.extensionPids();
      const pss = pids.reduce((a, pid) => a + pssBytes(pid), 0) / MIB;
      const st = await b.status().catch(() => null);
      const procs = processSplit(pids);
      let allocators = null;
      if (MEMDUMP) {
        const session = dumpSession ??= await b.context.browser().newBrowserCDPSession();
        const dump = await memoryDump(session).catch(() => ({}));
        const mine = dump[procs.offscreenPid] ?? {};
        allocators = Object.fromEntries(DUMP_ALLOCATORS.map((n) => [n, (mine[n] ?? NaN) / MIB]));
        if (DUMPS_FILE) {
          appendFileSync(DUMPS_FILE, `${JSON.stringify({ minute: k * SAMPLE_S / 60, workers: procs.workers,
            entries: dump.all?.[procs.offscreenPid] ?? {} })}\n`);
        }
      }
      if (MAPS_DIR) {
        for (const pid of pids) {
          writeFileSync(join(MAPS_DIR, `${String(k).padStart(4, '0')}-${pid}.json`), JSON.stringify(mappings(pid)));
        }
      }
      const rss = rssBytes(server.pid) / MIB;
      const split = rssSplit(server.pid);
      const store = await storeSize(server.db);
      const check = await checkWindow(server.url, streamId, acks, lost,
        (seq) => { if (fetchedOnce.has(seq)) return false; fetchedOnce.add(seq); return true; });
      const partMs = vst.part.splice(0);
      vst.reload.splice(0); vst.late.splice(0);
      const s = {
        at_s: Math.round((Date.now() - t0) / 1000), minute: (k * SAMPLE_S) / 60,
        pss_mib: pss, processes: pids.length, js_heap_mib: (st?.js_heap_bytes ?? NaN) / MIB,
        wasm_mib: (st?.wasm_memory_bytes ?? NaN) / MIB, ffmpeg_workers: procs.workers, offscreen_pss_mib: procs.offscreen / MIB,
        gpu_pss_mib: procs.gpu / MIB, utility_pss_mib: procs.utility / MIB, ffmpeg_switches: st?.ffmpeg_switches ?? NaN,
        process_pss_mib: procs.each, allocators_mib: allocators,
        host_rss_mib: rss, host_pool_mib: split.pool / MIB, host_other_mib: split.other / MIB, store_keys: store.keys, store_mib: store.bytes / MIB,
        acked: acks.acked.size, phase: st?.phase ?? null, segments_sent: st?.segments_sent ?? NaN,
        parts_sent: st?.parts_sent ?? NaN, segments_waiting: st?.segments_waiting ?? NaN,
        segments_dropped: st?.segments_dropped ?? NaN, last_error: st?.last_error ?? null,
        ...check, viewer_parts: vst.fetched - lastFetched, viewer_errors: vst.errors - lastErrors,
        viewer_part_p99_ms: percentile(partMs, 99), viewer_restarts: vst.restarts,
      };
      lastFetched = vst.fetched; lastErrors = vst.errors;
      samples.push(s);
      log(row([f1(s.minute), f1(s.pss_mib), f1(s.js_heap_mib), f1(s.wasm_mib), s.ffmpeg_workers, f1(s.offscreen_pss_mib),
        f1(s.gpu_pss_mib), f1(s.utility_pss_mib), f1(s.host_rss_mib), f1(s.host_pool_mib), f1(s.host_other_mib), s.store_keys, f1(s.store_mib), s.acked,
        s.segments_sent, s.parts_sent, s.segments_waiting, s.segments_dropped, s.listed, s.due, s.missing + s.unfetchable,
        s.viewer_parts, s.viewer_errors, Number.isFinite(s.viewer_part_p99_ms) ? s.viewer_part_p99_ms.toFixed(0) : '–'])
        + (allocators ? `  ${Object.entries(allocators).map(([n, v]) => `${n.replace(/.*\//, '')} ${f1(v)}`).join(' ')}` : '')
        + (s.phase !== 'live' ? `  extension phase ${s.phase}` : '') + (s.last_error ? `  last error: ${s.last_error}` : ''));
    }
    // The end: the whole window again, listed and fetched, with the broadcast still running.
    final = await checkWindow(server.url, streamId, acks, lost, () => true);
    await viewing;
    if (vst.lastError) log(`soak: viewers' last error: ${vst.lastError}`);
  } finally {
    clearInterval(drainTimer);
    if (b) { await b.stop().catch(() => {}); await b.close(); }
    await server.stop();
    await clock.close();
    acks.close();
  }
  const base = samples.find((s) => s.minute >= WARMUP_MIN) ?? samples[0];
  const last = samples.at(-1);
  // The host's baseline: once the store is full (retention + the warm-up), when the run gets there;
  // before that its window (and the host's caches of it) is still growing, as it should.
  const filled = samples.find((s) => s.minute >= RETENTION_MIN + WARMUP_MIN && s !== last);
  const hostBase = filled ?? base;
  // Each end: the median of its rows (see the verdicts above); the end's window never reaches back past the start.
  const from = (b) => samples.filter((s) => s.minute >= b.minute && s.minute < b.minute + ENDPOINT_MIN);
  const to = (b) => samples.filter((s) => s.minute > Math.max(b.minute, last.minute - ENDPOINT_MIN));
  const ends = (b, key) => (last && b ? [median(from(b).map((s) => s[key])), median(to(b).map((s) => s[key]))] : [NaN, NaN]);
  const [pssFrom, pssTo] = ends(base, 'pss_mib');
  const [rssFrom, rssTo] = ends(hostBase, 'host_rss_mib');
  const pssGrowth = pssTo - pssFrom;
  const rssGrowthPct = (100 * (rssTo - rssFrom)) / rssFrom;
  const lostList = [...lost].map(([seq, why]) => ({ seq, why })).sort((x, y) => x.seq - y.seq);
  const verdicts = {
    pss: { pass: pssGrowth < BOUNDS.pss_growth_mib, value: pssGrowth, bound: `< ${BOUNDS.pss_growth_mib} MiB` },
    host_rss: { pass: rssGrowthPct < BOUNDS.host_rss_growth_pct, value: rssGrowthPct, bound: `< ${BOUNDS.host_rss_growth_pct}%` },
    lost: { pass: lostList.length === 0 && final !== null && final.due > 0, value: lostList.length, bound: '0' },
  };
  const result = {
    minutes: MINUTES, sample_s: SAMPLE_S, viewers: VIEWERS, warmup_min: WARMUP_MIN, retention_min: RETENTION_MIN,
    margin_s: MARGIN_S, config: describeConfig(config), stream: streamId, samples, final, lost: lostList,
    acks: { seqs: acks.acked.size, ...acks.counts }, viewer_totals: { parts: vst.fetched, errors: vst.errors,
      restarts: vst.restarts, unused_hints: vst.unused_hints, last_error: vst.lastError },
    baseline_minute: base?.minute ?? null, host_baseline_minute: hostBase?.minute ?? null, endpoint_min: ENDPOINT_MIN,
    pss_ends_mib: [pssFrom, pssTo], host_rss_ends_mib: [rssFrom, rssTo], pss_growth_mib: pssGrowth, host_rss_growth_pct: rssGrowthPct, verdicts,
    pass: Object.values(verdicts).every((v) => v.pass),
    cmd: `CHALKSTREAM_SOAK_MIN=${MINUTES} scripts/bench --soak (bench/soak.mjs)`,
  };
  log('');
  log(`soak summary (${MINUTES} min, baseline minute ${base?.minute}):`);
  log(`  extension PSS ${f1(pssFrom)} -> ${f1(pssTo)} MiB (medians of ${ENDPOINT_MIN} min at each end; rows ${f1(base?.pss_mib)} -> ${f1(last?.pss_mib)}): growth ${f1(pssGrowth)} MiB `
    + `(bound < ${BOUNDS.pss_growth_mib} MiB) ${verdicts.pss.pass ? 'PASS' : 'FAIL'}`);
  log(`  host RSS ${f1(rssFrom)} (from minute ${hostBase?.minute}) -> ${f1(rssTo)} MiB (medians): growth `
    + `${f1(rssGrowthPct)}% (bound < ${BOUNDS.host_rss_growth_pct}%; max ${f1(Math.max(...samples.map((s) => s.host_rss_mib)))} MiB) `
    + `${verdicts.host_rss.pass ? 'PASS' : 'FAIL'}`
    + (filled ? '' : ` — the run ended before the store filled (retention ${RETENTION_MIN} min + ${WARMUP_MIN}): measured from minute ${hostBase?.minute}`));
  log(`  acknowledged segments lost: ${lostList.length} ${verdicts.lost.pass ? 'PASS' : 'FAIL'} — at the end ${final?.due} `
    + `acknowledged seqs were due (acknowledged within the last ${RETENTION_MIN} min - ${MARGIN_S} s), ${final?.listed} listed, `
    + `${final?.missing} missing, ${final?.fetched} fetched, ${final?.unfetchable} unfetchable; `
    + `${acks.acked.size} seqs acknowledged in all (${acks.counts.commits} commits, ${acks.counts.segment_puts} whole-segment PUTs, `
    + `${acks.counts.retried} repeated), ${acks.counts.gaps} gaps, ${acks.counts.refused} ingest requests refused`
    + (acks.counts.last_refused ? ` (last: ${acks.counts.last_refused})` : ''));
  for (const l of lostList.slice(0, 20)) log(`    lost seq ${l.seq}: ${l.why}`);
  log(`  extension: ${last?.segments_sent} segments and ${last?.parts_sent} parts acknowledged by its count, `
    + `${last?.segments_dropped} dropped, ${last?.segments_waiting} waiting at the last row`);
  log(`  viewers: ${vst.fetched} parts fetched, ${vst.errors} errors, ${vst.restarts} restarts`);
  log(`  store: ${base?.store_keys} -> ${last?.store_keys} keys (max ${Math.max(...samples.map((s) => s.store_keys))})`);
  log(`  ${result.pass ? 'PASS' : 'FAIL'}`);
  const file = join(root, 'target', 'bench', 'soak.json');
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify(result, null, 1));
  log(`soak: wrote ${file}`);
  return result;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runSoak().then((r) => { if (!r.pass) process.exit(1); })
    .catch((e) => { console.error(`soak: ${e.stack || e.message}`); process.exit(1); });
}
