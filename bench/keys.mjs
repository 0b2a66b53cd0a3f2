//! Keys per stream (issue "serverless envelope", item 1's measuring stick): how many key-value
//! tuples and bytes one live stream holds per retained minute, against the envelope Spin promises
//! every app (capacity for 1,024 tuples, values of 1 MB) and the goal for the key layout: a default
//! stream (720p, low latency) at most 40 keys per retained minute, whole-segment streams no more,
//! no value over 1,000,000 bytes and no key over 250 bytes.
//!
//! One host with `stream_retention` = 1 minute (the idle timeout at its default) gets six
//! synthetic broadcasters at once, each on its own session and paced in real time: the presets
//! 480p, 720p and 1080p (1, 2.5 and 5 Mbit/s of video plus 128 kbit/s of audio), each with low
//! latency (wire contract v2: 2 s segments of six 334 ms parts, part 0 independent, a commit
//! after the sixth) and without (v1: 2 s whole segments). Bodies are MPEG-TS shaped (188-byte
//! packets starting 0x47, random content) of bitrate x duration. Meanwhile the SQLite file of the
//! host's store is read (read-only, the `sqlite3` CLI) every few seconds, and every key is
//! attributed to the stream whose 40-hex id it contains, or to the app's shared keys.
//!
//! What is counted, and why it does not depend on today's key layout:
//! - keys per retained minute: the new key names of the stream that appeared per minute of
//!   streaming (from 10 s in to one retention before the end) and lived at least half a
//!   retention. Each lives about a retention, so a stream holds about this many per retained
//!   minute; the same figure for any future layout (a key rewritten in place, such as a stream's
//!   record, is not new; one deleted soon after it was written is transient and counted apart).
//!   Bytes per retained minute likewise (the values of those new keys).
//! - held: the most keys the stream held at once in steady state (older than retention + the
//!   sweep bound, 1 minute); the per-stream constant is held - keys/min x retention (fixed keys,
//!   the open segment, and what retention has not deleted yet), so at the default retention of
//!   10 minutes a stream holds keys/min x 10 + that constant.
//! - largest value and longest key of the stream over every read, and the shared keys (`due/`,
//!   `sweep/`) with theirs.
//!
//! A part on its own (the report's BENCHMARKS.md sections are written by hand from it):
//! `scripts/bench --only keys` (or `node bench/keys.mjs`) prints the table and writes
//! target/bench/keys-default.json; `--smoke` streams 20 s at retention 0.1 minute and only checks
//! that the counting works (keys counted for every configuration, the JSON written).
//! `runKeys(ctx)` and `renderKeys(result)` have bench/run.mjs's and bench/report.mjs's shapes.

import { execFile } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { startHost } from './lib/host.mjs';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { request, agent, sleep } from './lib/http.mjs';
import { newSession } from './lib/stream.mjs';
import { percentile } from './lib/stats.mjs';
import { cpuMeter } from './lib/proc.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const run = promisify(execFile);

const TS = 188;
const SEGMENT_S = 2;
const PART_MS = 334;
const PARTS = 6; // 6 x 334 ms = 2.004 s, rounds to the 2 s target duration
const AUDIO_BPS = 128_000;
const PRESETS = [['480p', 1_000_000], ['720p', 2_500_000], ['1080p', 5_000_000]];
/** The goal of the key layout, and the envelope's limits. */
export const GOAL = { keys_per_min: 40, max_value: 1_000_000, max_key: 250, capacity: 1024, default_retention_min: 10 };

const MODES = {
  // stream_s: how long each broadcaster streams; steady_s: from when the store counts as steady
  // (retention + the sweep bound); every_s: how often the store is read; rate_from_s: from when new
  // keys are counted.
  default: { retention_min: 1, stream_s: 180, steady_s: 125, every_s: 5, rate_from_s: 10 },
  smoke: { retention_min: 0.1, stream_s: 20, steady_s: 12, every_s: 1, rate_from_s: 3 },
};

/** `bytes` of MPEG-TS shape: whole 188-byte packets, each starting with the sync byte, random content. */
function tsBody(bytes) {
  const b = randomFillSync(Buffer.allocUnsafe(Math.max(1, Math.floor(bytes / TS)) * TS));
  for (let i = 0; i < b.length; i += TS) b[i] = 0x47;
  return b;
}

/** Every key of the store with its value's length, read-only (the host keeps writing meanwhile). */
async function readStore(db) {
  const { stdout } = await run('sqlite3', ['-readonly', '-cmd', '.timeout 10000', '-json', db,
    "SELECT store AS s, key AS k, length(value) AS n FROM spin_key_value"], { maxBuffer: 256 * 2 ** 20 });
  return stdout.trim() ? JSON.parse(stdout) : [];
}

/** One broadcaster in real time until `stopAt`; the upload answers and lateness go to `st`. */
async function broadcast(base, cfg, stopAt, st) {
  const a = agent(1);
  const s = cfg.session;
  const t0 = Date.now();
  const ok = (r, what) => {
    st.answer_ms.push(r.ms);
    if (r.status === 201 || r.status === 200) st.acked++;
    else { st.errors++; st.last_error = `${what} answered ${r.status || r.error}: ${r.body?.toString().slice(0, 160) ?? ''}`; }
  };
  const wait = async (due) => {
    const late = Date.now() - due;
    if (late > 0) st.late_ms = Math.max(st.late_ms, late); else await sleep(-late);
  };
  if (cfg.low_latency) {
    const partBytes = (cfg.bps * PART_MS) / 1000 / 8;
    for (let seq = 0, n = 0; t0 + (n + 1) * PART_MS <= stopAt; seq++) {
      for (let part = 0; part < PARTS; part++, n++) {
        await wait(t0 + (n + 1) * PART_MS); // a part is uploaded once it has been captured
        const body = tsBody(partBytes);
        const headers = {
          'content-type': 'video/mp2t', 'content-length': body.length,
          'x-duration': (PART_MS / 1000).toFixed(3), 'x-part-target': (PART_MS / 1000).toFixed(3),
          'x-target-duration': String(SEGMENT_S),
        };
        if (part === 0) {
          headers['x-independent'] = '1';
          headers['x-program-date-time'] = new Date(t0 + n * PART_MS).toISOString();
        }
        ok(await request(`${base}/ingest/${s.secret}/${seq}/${part}.ts`, { method: 'PUT', agent: a, body, headers }), `part ${seq}.${part}`);
        st.bytes += body.length;
      }
      ok(await request(`${base}/ingest/${s.secret}/${seq}/commit`, { method: 'POST', agent: a, headers: { 'x-parts': String(PARTS) } }), `commit ${seq}`);
      st.segments++;
    }
  } else {
    const segBytes = (cfg.bps * SEGMENT_S) / 8;
    for (let seq = 0; t0 + (seq + 1) * SEGMENT_S * 1000 <= stopAt; seq++) {
      await wait(t0 + (seq + 1) * SEGMENT_S * 1000);
      const body = tsBody(segBytes);
      ok(await request(`${base}/ingest/${s.secret}/${seq}.ts`, {
        method: 'PUT', agent: a, body,
        headers: {
          'content-type': 'video/mp2t', 'content-length': body.length, 'x-duration': SEGMENT_S.toFixed(3),
          'x-program-date-time': new Date(t0 + seq * SEGMENT_S * 1000).toISOString(),
        },
      }), `segment ${seq}`);
      st.bytes += body.length;
      st.segments++;
    }
  }
  a.destroy();
}

/** A key's shape without its stream id and numbers, e.g. `seg/{id}/{n}/p{n}/{hex}/{n}`. */
const shape = (key, id) => key.replace(id, '{id}').replace(/\/[0-9a-f]{12}\//g, '/{hex}/').replace(/\d+/g, '{n}');

/**
 * The part: six configurations streamed at once against one host, the store read meanwhile.
 * Resolves to the raw figures (see `renderKeys`).
 */
export async function runKeys({ root = ROOT, mode = 'default', log = console.log } = {}) {
  const m = MODES[mode] ?? MODES.default;
  const configs = [];
  for (const lowLatency of [true, false]) {
    for (const [preset, video] of PRESETS) {
      configs.push({ name: `${preset} ${lowLatency ? 'low latency' : 'whole segments'}`, preset, low_latency: lowLatency,
        bps: video + AUDIO_BPS, session: newSession() });
    }
  }
  const host = await startHost(root, 'keys', { stream_retention: m.retention_min });
  const cpu = cpuMeter(host.pid);
  const t0 = Date.now();
  const stopAt = t0 + m.stream_s * 1000;
  const stats = configs.map(() => ({ answer_ms: [], acked: 0, errors: 0, late_ms: 0, bytes: 0, segments: 0 }));
  // Per config: key -> { first, last, n } (first and last read that saw it, its latest length).
  const seen = configs.map(() => new Map());
  const samples = []; // { t_s, held: [keys per config], shared: { keys, bytes, max_value, max_key }, other }
  const shared = new Map();
  const stores = new Set();
  let reads = 0;
  let read_ms_max = 0;
  const broadcasters = configs.map((c, i) => broadcast(host.url, c, stopAt, stats[i]));
  const sampler = (async () => {
    for (let k = 1; ; k++) {
      await sleep(t0 + k * m.every_s * 1000 - Date.now());
      if (Date.now() > stopAt + 500) break;
      const tr = performance.now();
      const rows = await readStore(host.db);
      read_ms_max = Math.max(read_ms_max, performance.now() - tr);
      const t_s = (Date.now() - t0) / 1000;
      const held = configs.map(() => ({ keys: 0, bytes: 0 }));
      const sh = { keys: 0, bytes: 0, other: 0 };
      for (const { s, k: key, n } of rows) {
        stores.add(s);
        const i = configs.findIndex((c) => key.includes(c.session.id));
        if (i < 0) {
          sh.keys++; sh.bytes += n;
          if (!/^(due|sweep)\//.test(key)) sh.other++;
          const was = shared.get(key);
          shared.set(key, { first: was?.first ?? reads, last: reads, n, max: Math.max(n, was?.max ?? 0) });
          continue;
        }
        held[i].keys++; held[i].bytes += n;
        const was = seen[i].get(key);
        seen[i].set(key, { first: was?.first ?? reads, last: reads, n, max: Math.max(n, was?.max ?? 0) });
      }
      samples.push({ t_s, held, shared: sh });
      reads++;
    }
  })();
  let hostCpu;
  try {
    await Promise.all([...broadcasters, sampler]);
  } finally {
    hostCpu = cpu.stop();
    await host.stop();
  }

  const R = m.retention_min;
  const last = samples.length - 1;
  // New keys are counted from rate_from_s to one retention before the end, so that every one of
  // them has had the time to be deleted again: a key that lived at least half a retention is a
  // window key (it scales with retention); one that went sooner is transient (e.g. a marker kept
  // only until the next retention pass), whose share the held peak, and so the constant, carries.
  const rateFrom = samples.findIndex((x) => x.t_s >= m.rate_from_s);
  const rateTo = samples.findLastIndex((x) => x.t_s <= samples[last].t_s - R * 60);
  const steady = samples.map((x, j) => j).filter((j) => samples[j].t_s >= m.steady_s);
  const minutes = rateFrom >= 0 && rateTo > rateFrom ? (samples[rateTo].t_s - samples[rateFrom].t_s) / 60 : NaN;
  const lived = (v) => samples[v.last].t_s - samples[v.first].t_s;
  const rows = configs.map((c, i) => {
    const keys = [...seen[i]];
    const newKeys = keys.filter(([, v]) => rateFrom >= 0 && v.first > rateFrom && v.first <= rateTo);
    const created = newKeys.filter(([, v]) => lived(v) >= (R * 60) / 2);
    const keysPerMin = created.length / minutes;
    const bytesPerMin = created.reduce((sum, [, v]) => sum + v.n, 0) / minutes;
    const peak = steady.length ? Math.max(...steady.map((j) => samples[j].held[i].keys)) : NaN;
    const peakBytes = steady.length ? Math.max(...steady.map((j) => samples[j].held[i].bytes)) : NaN;
    const constant = peak - keysPerMin * R;
    const at10 = keysPerMin * GOAL.default_retention_min + constant;
    // The keys of the steady read with the most keys, by shape: what a later layout has to fold.
    const peakRead = steady.length ? steady.reduce((a, j) => (samples[j].held[i].keys > samples[a].held[i].keys ? j : a), steady[0]) : -1;
    const shapes = {};
    for (const [key, v] of keys) if (v.first <= peakRead && v.last >= peakRead) shapes[shape(key, c.session.id)] = (shapes[shape(key, c.session.id)] ?? 0) + 1;
    const st = stats[i];
    return {
      name: c.name, preset: c.preset, low_latency: c.low_latency, bitrate_bps: c.bps, stream: c.session.id,
      segments: st.segments, uploads: st.answer_ms.length, acked: st.acked, errors: st.errors, last_error: st.last_error,
      media_bytes_per_min: (c.bps * 60) / 8,
      answer_p50_ms: percentile(st.answer_ms, 50), answer_p95_ms: percentile(st.answer_ms, 95),
      answer_max_ms: Math.max(0, ...st.answer_ms), late_max_ms: st.late_ms,
      kept_up: st.errors === 0 && st.late_ms <= 1000,
      keys_seen: keys.length, keys_created: created.length,
      transient_per_min: (newKeys.length - created.length) / minutes,
      transient_shapes: [...new Set(newKeys.filter((e) => !created.includes(e)).map(([k]) => shape(k, c.session.id)))],
      keys_per_min: keysPerMin, bytes_per_min: bytesPerMin,
      held_peak: peak, held_peak_bytes: peakBytes, held_last: samples[last]?.held[i].keys ?? NaN,
      constant, keys_at_10_min: at10, streams_per_capacity: Math.floor(GOAL.capacity / at10),
      max_value: Math.max(0, ...keys.map(([, v]) => v.max)),
      max_key: Math.max(0, ...keys.map(([k]) => Buffer.byteLength(k))),
      peak_shapes: shapes,
      verdict: {
        keys: keysPerMin <= GOAL.keys_per_min ? 'meets' : 'misses',
        value: Math.max(0, ...keys.map(([, v]) => v.max)) <= GOAL.max_value ? 'meets' : 'misses',
        key: Math.max(0, ...keys.map(([k]) => Buffer.byteLength(k))) <= GOAL.max_key ? 'meets' : 'misses',
      },
    };
  });
  const sharedKeys = [...shared];
  const result = {
    mode, retention_min: R, stream_s: m.stream_s, steady_from_s: m.steady_s, read_every_s: m.every_s,
    rate_from_s: samples[rateFrom]?.t_s, rate_to_s: samples[rateTo]?.t_s, reads: samples.length, read_ms_max,
    stores: [...stores], host_cpu_pct: hostCpu.percent, goal: GOAL, rows,
    shared: {
      keys_peak: Math.max(0, ...samples.map((x) => x.shared.keys)),
      keys_steady_peak: Math.max(0, ...steady.map((j) => samples[j].shared.keys)),
      bytes_peak: Math.max(0, ...samples.map((x) => x.shared.bytes)),
      other_keys: Math.max(0, ...samples.map((x) => x.shared.other)),
      names_seen: sharedKeys.length,
      max_value: Math.max(0, ...sharedKeys.map(([, v]) => v.max)),
      max_key: Math.max(0, ...sharedKeys.map(([k]) => Buffer.byteLength(k))),
      shapes: [...new Set(sharedKeys.map(([k]) => k.split('/').map((c) => (/^[0-9a-f]+$/.test(c) ? '{n}' : c)).join('/')))],
    },
    held_series: samples.map((x) => ({ t_s: x.t_s, keys: x.held.map((h) => h.keys), shared: x.shared.keys })),
  };
  log(`  keys: ${samples.length} reads of the store, host CPU ${hostCpu.percent.toFixed(0)}% of a core, `
    + `${rows.filter((r) => !r.kept_up).length} of ${rows.length} broadcasters fell behind or failed`);
  return result;
}

const int = (x) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : 'n/a');
const mb = (x) => (Number.isFinite(x) ? (x / 1e6).toFixed(1) : 'n/a');

const transient = (r) => {
  const shapes = [...new Set(r.rows.flatMap((x) => x.transient_shapes))];
  const rates = r.rows.map((x) => x.transient_per_min);
  return shapes.length ? `${Math.min(...rates).toFixed(0)}–${Math.max(...rates).toFixed(0)} per minute, ${shapes.map((k) => `\`${k}\``).join(', ')}` : 'none';
};

/** The part's section: a markdown table per configuration, then what the figures mean. */
export function renderKeys(r, cmd = `scripts/bench --only keys${r.mode === 'smoke' ? ' --smoke' : ''}`) {
  const g = r.goal;
  const lines = [`## Keys per stream (\`${cmd}\`)`, '',
    `One host, \`stream_retention\` = ${r.retention_min} minute, six synthetic broadcasters at once for ${r.stream_s} s in real time `
    + `(random MPEG-TS-shaped bodies of bitrate x duration; video plus ${AUDIO_BPS / 1000} kbit/s audio). `
    + `The SQLite store read every ${r.read_every_s} s (${r.reads} reads); keys per retained minute are the stream's new keys per minute `
    + `from ${r.rate_from_s?.toFixed(0)} s to ${r.rate_to_s?.toFixed(0)} s that lived at least half a retention `
    + `(transient keys, deleted sooner: ${transient(r)}); held is the peak from ${r.steady_from_s} s on `
    + `(older than retention + the sweep bound); constant = held - keys/min x ${r.retention_min}; `
    + `at ${g.default_retention_min} min = keys/min x ${g.default_retention_min} + constant. `
    + `Goal: <= ${g.keys_per_min} keys per retained minute, values <= ${g.max_value.toLocaleString('en-US')} bytes, keys <= ${g.max_key} bytes.`, '',
    '| stream | kbit/s | keys / retained min | MB / retained min (media) | max value (bytes) | max key (bytes) | held (peak) | constant | keys at 10 min | streams per 1,024 keys | keys/min | values | keys |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...r.rows.map((x) => `| ${x.name} | ${int(x.bitrate_bps / 1000)} | ${x.keys_per_min.toFixed(1)} | ${mb(x.bytes_per_min)} (${mb(x.media_bytes_per_min)}) | `
      + `${int(x.max_value)} | ${x.max_key} | ${int(x.held_peak)} | ${int(x.constant)} | ${int(x.keys_at_10_min)} | ${x.streams_per_capacity} | `
      + `**${x.verdict.keys}** | **${x.verdict.value}** | **${x.verdict.key}** |`),
    '',
    `Shared keys of the app (all six streams): at most ${r.shared.keys_peak} at once (${r.shared.keys_steady_peak} in steady state), `
    + `${r.shared.names_seen} names seen (${r.shared.shapes.join(', ') || 'none'}), largest value ${int(r.shared.max_value)} bytes, longest key ${r.shared.max_key} bytes`
    + `${r.shared.other_keys ? `; ${r.shared.other_keys} keys of neither a stream nor the sweep` : ''}. Store names: ${r.stores.join(', ')}.`, '',
    'Did the machine keep up (each broadcaster\'s upload answers; lateness is how far behind its real-time schedule an upload started):', '',
    '| stream | uploads | segments | answer p50 / p95 / max (ms) | most late (ms) | errors |',
    '| --- | --- | --- | --- | --- | --- |',
    ...r.rows.map((x) => `| ${x.name} | ${x.uploads} | ${x.segments} | ${x.answer_p50_ms.toFixed(0)} / ${x.answer_p95_ms.toFixed(0)} / ${x.answer_max_ms.toFixed(0)} | `
      + `${x.late_max_ms.toFixed(0)} | ${x.errors}${x.last_error ? ` (${x.last_error})` : ''} |`),
    '',
    `Host CPU over the run: ${r.host_cpu_pct.toFixed(0)}% of one core; slowest read of the store ${r.read_ms_max.toFixed(0)} ms.`, '',
    'The keys held at the peak, by shape (720p):', '',
    ...r.rows.filter((x) => x.preset === '720p').flatMap((x) => [`- ${x.name}: `
      + Object.entries(x.peak_shapes).sort((a, b) => b[1] - a[1]).map(([k, n]) => `\`${k}\` ${n}`).join(', ')]),
    ''];
  return lines.join('\n');
}

async function main() {
  const args = process.argv.slice(2);
  const mode = args.includes('--smoke') ? 'smoke' : 'default';
  const { machine } = await import('./run.mjs');
  const t0 = performance.now();
  console.log(`bench: part keys (${mode})`);
  const before = machine();
  const r = await runKeys({ mode });
  r.machine = { ...before, load_after: (await import('node:os')).loadavg().map((x) => x.toFixed(2)).join(' '),
    seconds: Math.round((performance.now() - t0) / 1000) };
  const dir = join(ROOT, 'target', 'bench');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `keys-${mode}.json`);
  writeFileSync(file, JSON.stringify(r, null, 1));
  console.log(renderKeys(r));
  console.log(`bench: part keys took ${r.machine.seconds} s; raw figures in ${file}`);
  // The smoke checks that the counting works, never the budget (today's layout misses it).
  const broken = r.rows.filter((x) => !(x.acked > 0 && x.keys_seen > 0 && x.held_peak > 0 && x.keys_created > 0
    && Number.isFinite(x.keys_per_min) && x.max_value > 0 && x.max_key > 0));
  if (!r.stores.length || broken.length) {
    console.error(`bench: part keys FAILED: nothing counted for ${broken.map((x) => x.name).join(', ') || 'the store'}`
      + `${broken.find((x) => x.last_error) ? ` (${broken.find((x) => x.last_error).last_error})` : ''}`);
    process.exit(1);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e) => { console.error(`bench: ${e.stack || e.message}`); process.exit(1); });
}
