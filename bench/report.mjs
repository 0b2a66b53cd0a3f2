//! Turns the suite's raw figures into BENCHMARKS.md: per figure the command, median and spread, reference and verdict.
import { renderScaleOut } from './scaleout.mjs';
import { renderReads } from './reads.mjs';

const f = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const spread = (s, d = 1, unit = '') => (s && s.runs
  ? `${f(s.median, d)}${unit} (${f(s.min, d)}–${f(s.max, d)}, ${s.runs} run${s.runs > 1 ? 's' : ''})`
  : 'n/a');
// What bounds the segment GET figure and what would close the gap (the measured part is in the table).
const SEGMENT_GAP = `Each GET instantiates the component afresh (as Spin does), which reads the segment's metadata and
its parts (values of at most 1 MiB) from SQLite through the key-value interface, copies them into the
wasm guest and streams them back out through wasi:http, one request log line on stderr; nginx hands
the file to the kernel with sendfile. The host's CPU is in the column above (200% = both cores, which
wrk shares), and even the landing page, which touches no storage, reaches about a tenth of nginx's
rate: the per-request floor (a fresh instance, the log line) and the copies of the megabyte bound it.
What would close the gap: segments never change once stored and are served with
\`Cache-Control: immutable\`, so any cache or CDN in front serves repeat requests at nginx's rate; in
the host, reading parts straight into the response without the guest round trip is not possible
under Spin's model, so the cache is the fix.`;

// What bounds the playlist at 3600 segments and what would close the gap.
const SCALING_GAP = `How a GET scales: for retention 0 the component stores each complete block of 8, 64 and 512
segments as its rendered playlist lines (\`lines/{id}/{len}/{n}\` in spin-app/src/store.rs), so a GET
copies about n/512 + 7 + 7 stored blocks plus the open tail's metas (21 reads at 3600 segments) instead
of reading and formatting one meta per segment. What still grows is the playlist itself: an EVENT
playlist cannot drop segments (RFC 8216), so at 3600 segments it is over 400 KB, checked and copied
out through the guest on every GET; the reads are nearly flat, the size cannot be. What would close
the gap: a cache in front to absorb repeat GETs within the playlist's one-segment Cache-Control.`;

// What bounds the audience (seen in the CPU figures of the failing steps above).
const HOST_BOUND = `At the first failing step the host and the bench's own simulated viewers together use about both
cores (the two CPU figures above), so on this machine the audience is bounded first by the two
cores that server and load generator share. Within the host, the test host keeps one SQLite
connection behind a mutex (host/src/kv.rs), so every key-value read and write is serialized and
a 1 MiB segment is read or written whole while holding it; real Spin's SQLite key-value store has the
same single-writer shape. A cloud key-value backend or a cache in front (segments are immutable) is
what lifts these bounds, not the component.`;

// The reading of the latency breakdown: what bounds it and what would lower it.
const LATENCY_FLOOR = `The design's floor. With whole segments the player holds back about two target durations so it
does not stall, and a segment can only be listed once it is complete, so glass-to-glass is about two
to three segment lengths (why the 6 s setting of the original design cannot come near the targets).
With parts (LL-HLS) the unit is the part: the player holds back PART-HOLD-BACK (three part targets),
blocking reloads and held part requests deliver each part as soon as it is stored, and the edge is
about one part plus its remux and upload old. Everything done per upload adds directly: the remux, the
upload, the reload. The PDT error column is how much later than the true capture the extension's
\`X-Program-Date-Time\` stamps are (positive: the player's own figure under-reports).`;
const LATENCY_GAP = `What would close the gap: shorter parts (the hold-back is three of them) as long as
the per-part remux stays small (see part 4 for where that time goes), and a cheaper remux.`;
const LATENCY_LOWER = `What would lower the figures further: shorter parts, paid for by
more remux calls and requests per second.`;
// A run counts as frozen when, once playing, its page showed no frame for this long (a stall on a busy
// machine lasts a second or two; the start-up freezes seen before lasted tens of seconds).
const FROZEN_GAP_S = 5;

const win = (text) => text.replace(/ runs?\)$/, (m) => m.replace('run', 'window'));
const verdict = (ok) => (ok ? '**met**' : '**missed**');

function busy(m) {
  const first = (l) => Number(String(l ?? '').split(' ')[0]);
  if (first(m.load_before) > m.nproc) {
    return `**This run shared the machine with other work** (1-minute load average ${f(first(m.load_before), 1)} on
${m.nproc} cores when it started, see above): every figure is lower, and its spread wider, than on an idle
machine. The ratios against nginx and the latency breakdown were measured under the same load, so they
still compare like with like; rerun \`scripts/bench\` on an idle machine for absolute figures.

`;
  }
  return `The machine was otherwise idle when the run started; the higher load averages during it are the
suite's own processes (two Chromium instances, the host, wrk, nginx) on ${m.nproc} cores.

`;
}

function header(r) {
  const m = r.machine;
  const what = {
    smoke: 'a **smoke run** (tiny durations, one run each: the command works; the figures mean little)',
    default: 'the **default run** (`scripts/bench`): every figure over 3 runs; client cost of each preset over 2 minutes',
    presets: 'the **presets run** (`scripts/bench --presets`): every figure over 3 runs; client cost and memory of each preset over 10 minutes',
    long: 'the **long run** (`scripts/bench --long`): every figure over 3 runs; client cost and memory of each preset over 10 minutes, the default preset\'s memory to 30 minutes',
  }[r.mode];
  return `# Benchmarks

Measured by \`scripts/bench\` (see [bench/](bench/) for the code) on this machine; this file is
${what}. Each figure gives its **median** and, in brackets, the **spread (min–max)** over the runs.
Everything runs on loopback on one machine, so the load generator competes with the server for the
same cores: figures are this machine's, to compare with each other and with the references measured
in the same run, not absolute capacities.

| machine | |
| --- | --- |
| date | ${m.date} |
| commit | \`${m.commit}\` |
| CPU | ${m.cpu}, \`nproc\` = ${m.nproc} |
| memory | ${f(m.memory_gib, 1)} GiB |
| OS | ${m.kernel} |
| load average (1/5/15 min) | ${m.load_before} at the start, ${m.load_after} at the end, highest 1-minute figure seen ${m.load_max ?? 'not recorded'} (the suite took ${Math.round((m.seconds ?? 0) / 60)} min) |
| tools | node ${m.node}, ${m.wrk}, nginx ${m.nginx}, ${m.chromium}, ${m.ffmpeg} |

${busy(m)}Reproduce: \`scripts/setup --bench && scripts/build && scripts/bench\` (about 45 minutes;
\`--presets\` measures each preset of the client for 10 minutes instead of 2 (about 75 minutes), \`--long\`
also takes the default preset's memory to 30 minutes (about 95 minutes), \`--smoke\` checks the command
in about a minute, \`--only client,latency\` runs only those parts).
Raw figures of the last run: \`target/bench/results-<mode>.json\`.
`;
}

function failed(r, part) {
  return r.failures?.[part] ? `\n**This part failed in this run:** ${r.failures[part]}\n` : '';
}

/** The targets per setting: issue 8 for low latency, the earlier ones for whole segments. */
function latencyTarget(row) {
  if (row.low_latency) return { p50: 1.5, p95: 2.0 };
  return row.segment_s === 1 ? { p50: 4 } : row.segment_s === 2 ? { p50: 6 } : null;
}
const settingName = (row) => `${row.segment_s} s segments, ${row.low_latency ? `parts (low latency${row.mic || row.overlay ? '' : ', the default'})` : 'whole segments (low latency off)'}`
  + `${row.mic ? ', microphone mixed in' : ''}${row.overlay ? ', camera in the corner' : ''}`
  + (row.low_latency && row.player_low_latency === false ? ' — **the player did not see parts**' : '');

/** Issue 9: glass-to-glass with the microphone and camera on against the same setting without them. */
function devicesAgainstDefault(L) {
  const out = [];
  for (const row of L.rows.filter((x) => x.mic || x.overlay)) {
    const base = L.rows.find((x) => !x.mic && !x.overlay && x.segment_s === row.segment_s && x.low_latency === row.low_latency);
    if (!base) continue;
    const d50 = row.measured_p50.median - base.measured_p50.median;
    const d95 = row.measured_p95.median - base.measured_p95.median;
    // Within noise: the two settings' run-to-run ranges overlap.
    const overlap = (a, b) => a.runs && b.runs && a.min <= b.max && b.min <= a.max;
    const within = overlap(row.measured_p50, base.measured_p50) && overlap(row.measured_p95, base.measured_p95);
    out.push(`With the microphone mixed in and the camera in the corner (${row.segment_s} s segments, ${row.low_latency ? 'parts' : 'whole segments'}),
glass-to-glass p50 is ${f(d50, 2)} s and p95 ${f(d95, 2)} s ${d50 >= 0 ? 'above' : 'against'} the same setting without them: ${within
    ? '**unchanged within noise** (the run-to-run ranges of both figures overlap)'
    : `**not within noise** (the run-to-run ranges do not overlap${row.measured_p50.runs < 2 ? '; one run per setting says little' : ''})`}.`);
  }
  return out.join('\n\n');
}

/**
 * A setting's latency figures as the verdicts use them: p50 and p95 pooled over every frame of every
 * run, and the worst run (highest p95) on its own. Results saved before the pooling (no per-frame
 * samples) fall back to the median of the per-run figures, and say so.
 */
function latencyFigures(row) {
  const pooled = Number.isFinite(row.pooled_p50) && Number.isFinite(row.pooled_p95);
  const runs = row.per_run ?? [];
  const worst = runs.length ? runs.reduce((w, x) => (x.p95 > w.p95 ? x : w)) : null;
  // null: results saved before the per-run figures (nothing to count frozen runs from).
  const frozen = runs.length ? runs.filter((x) => x.longest_gap_s > FROZEN_GAP_S).length : null;
  return {
    pooled,
    p50: pooled ? row.pooled_p50 : row.measured_p50.median,
    p95: pooled ? row.pooled_p95 : row.measured_p95.median,
    worst, frozen, runs: runs.length || row.measured_p50.runs,
  };
}

/** How far a figure misses its target, never printed as a miss of 0.00. */
const by = (x) => (x < 0.005 ? 'under 0.01' : f(x, 2));

/** Verdict of one setting against its target, from `latencyFigures`; `null` without a target. */
function latencyVerdict(row) {
  const t = latencyTarget(row);
  if (!t) return null;
  const x = latencyFigures(row);
  const ok50 = x.p50 <= t.p50;
  const ok95 = t.p95 == null || x.p95 <= t.p95;
  const noFreeze = !x.frozen;
  return { t, x, ok50, ok95, noFreeze, met: ok50 && ok95 && noFreeze };
}

/** The sentence that sums the verdicts up, written from them. */
function latencySummary(L) {
  const parts = [];
  for (const row of L.rows) {
    const v = latencyVerdict(row);
    if (!v) continue;
    const { t, x } = v;
    const figs = `p50 ${f(x.p50, 2)} s against ${t.p50} s${t.p95 != null ? `, p95 ${f(x.p95, 2)} s against ${t.p95} s` : ''}`;
    const misses = [!v.ok50 && `p50 by ${by(x.p50 - t.p50)} s`, !v.ok95 && `p95 by ${by(x.p95 - t.p95)} s`,
      !v.noFreeze && `${x.frozen} frozen run${x.frozen > 1 ? 's' : ''}`].filter(Boolean);
    const frozen = x.frozen === null ? 'frozen runs not recorded' : `${x.frozen} of ${x.runs} runs frozen`;
    parts.push(`- ${settingName(row)}: ${figs}${x.pooled ? ' (pooled over every frame)' : ' (medians of the runs: these results have no per-frame samples)'}, `
      + `${frozen}: ${v.met ? '**met**' : `**missed** (${misses.join(', ')})`}.`);
  }
  if (!parts.length) return '';
  const all = L.rows.every((row) => latencyVerdict(row)?.met !== false);
  return `${parts.join('\n')}\n\n${all ? `${parts.length > 1 ? `All ${parts.length} settings meet their targets` : 'The setting meets its targets'}. ${LATENCY_LOWER}` : LATENCY_GAP}`;
}

function latency(r) {
  const L = r.parts.latency;
  let s = '\n## 1. Glass-to-glass latency\n' + failed(r, 'latency');
  if (!L) return s + '\nNot measured in this run.\n';
  s += `
${L.method}

Command: \`${L.cmd}\`. Player settings: ${L.player_settings}.

p50 and p95 are pooled over every frame of every run (each frame one sample), the worst run (highest p95)
is shown beside them, and per-run p50 as median and range. A run counts as frozen when, once playing, its page
showed no frame for more than ${FROZEN_GAP_S} s. Verdicts are computed from the pooled figures and the frozen count.

| setting | measured p50 (s), pooled | measured p95 (s), pooled | worst run p50 / p95 (s) | per-run p50 (s) | frozen runs | player's own (PDT) p50 (s) | frames decoded | target | verdict |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
`;
  for (const row of L.rows) {
    const x = latencyFigures(row);
    const v = latencyVerdict(row);
    const t = v?.t;
    const verdictText = !v ? 'reference (original design)'
      : verdict(v.met) + (!v.ok50 ? ` (p50 by ${by(x.p50 - t.p50)} s)` : '')
        + (!v.ok95 ? ` (p95 by ${by(x.p95 - t.p95)} s)` : '') + (!v.noFreeze ? ` (${x.frozen} frozen)` : '');
    const target = t ? `p50 <= ${t.p50} s${t.p95 ? `, p95 <= ${t.p95} s` : ''}, none frozen` : '—';
    const pooledNote = x.pooled ? '' : ' (median of runs)';
    const worst = x.worst ? `${f(x.worst.p50, 2)} / ${f(x.worst.p95, 2)}` : 'n/a';
    const frozen = row.per_run ? `${x.frozen} of ${x.runs}` : 'n/a';
    s += `| ${settingName(row)} | ${f(x.p50, 2)}${pooledNote} | ${f(x.p95, 2)}${pooledNote} | ${worst} | ${spread(row.measured_p50, 2)} | ${frozen} | ${spread(row.player_p50, 2)} | ${row.frames} (${row.undecoded} unreadable) | ${target} | ${verdictText} |\n`;
  }
  s += `
Where the time goes (medians over the runs). The measured latency splits into how far behind the live
edge hls.js plays (\`hls.latency\`, media seconds: PART-HOLD-BACK, three parts, with parts; two target
durations without; hls.js's target grows with every stall it sees) and the age of the live edge itself, i.e. how long after its capture the newest
listed frame reached the player (measured − behind edge). The extension's own figures show what the
edge's age is made of: from the end of an upload's recording (a part, or a whole segment) until the
server acknowledged it (its average; it includes the ffmpeg.wasm remux), then the player's reload.

| setting | measured p50 | player behind live edge | hls.js target latency (stalls per run) | age of the live edge | recording end → server ack (extension) | ffmpeg.wasm s per media s | PDT error (measured − player's own) | frames shown per s | uploads dropped |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
`;
  for (const row of L.rows) {
    const stalls = row.stalls ? ` (${f(row.stalls.median, 0)}; ${f(row.stalls.min, 0)}–${f(row.stalls.max, 0)})` : '';
    s += `| ${settingName(row)} | ${f(row.measured_p50.median, 2)} | ${f(row.behind_edge.median, 2)} | ${row.target ? f(row.target.median, 2) : 'n/a'}${stalls} | ${f(row.measured_p50.median - row.behind_edge.median, 2)} | ${f(row.ack.median, 2)} | ${f(row.remux_per_media_s?.median, 3)} | ${f(row.measured_p50.median - row.player_p50.median, 2)} | ${f(row.fps.median, 1)} | ${Number.isFinite(row.dropped) ? row.dropped : 'n/a'} |\n`;
  }
  s += `\n${LATENCY_FLOOR}\n\n${latencySummary(L)}\n`;
  const perRun = L.rows.filter((row) => row.per_run?.length);
  if (perRun.length) {
    s += '\nEach run (p50 / p95 in s, first frame after s, longest time without a frame in s, stalls; the player\'s leaps to live, unstuck seeks and hls.js restarts when any):\n\n';
    for (const row of perRun) {
      s += `- ${settingName(row)}: ${row.per_run.map((x) => `${f(x.p50, 2)} / ${f(x.p95, 2)} (${f(x.start_s, 1)}, ${f(x.longest_gap_s, 2)}, ${x.stalls}`
        + `${x.leaps ? `, ${x.leaps} leap${x.leaps > 1 ? 's' : ''}` : ''}${x.unstuck ? `, ${x.unstuck} unstuck` : ''}${x.rejoins ? `, ${x.rejoins} rejoin${x.rejoins > 1 ? 's' : ''}` : ''})`).join('; ')}\n`;
    }
  }
  const dev = devicesAgainstDefault(L);
  if (dev) s += `\n${dev}\n`;
  if (L.notes) s += `\n${L.notes}\n`;
  return s;
}

function server(r) {
  const S = r.parts.server;
  let s = '\n## 2. Server capacity\n' + failed(r, 'server');
  if (!S) return s + '\nNot measured in this run.\n';
  const g = S.get;
  s += `
### GET of a segment and of the live playlist, against nginx

Our host (the real component in \`chalkstream-host\`) and nginx (\`worker_processes auto\`, sendfile,
no access log) serve the same bytes on loopback, runs interleaved (ours, nginx, ours, …); the ratio is
ours / nginx, taken per pair of runs. Command (same for nginx): \`${g.segment?.cmd}\`.

| request | ours req/s | nginx req/s | ratio ours/nginx | ours p99 (ms) | nginx p99 (ms) | errors | target | verdict |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
`;
  const cpuNotes = [];
  for (const [k, label] of [['segment', `segment (${f((g.segment?.bytes ?? 0) / 1048576, 2)} MiB)`], ['playlist', `live playlist (${g.playlist?.bytes} B, 10 segments)`],
    ['floor', `landing page \`/\` (${g.floor?.bytes} B, no key-value reads: the per-request floor)`]]) {
    const x = g[k];
    if (!x) continue;
    const target = k === 'segment' ? 'ratio >= 0.5' : '—';
    const v = k === 'segment' ? verdict(x.ratio.median >= 0.5) : '—';
    cpuNotes.push(`${k}: ${spread(x.ours.host_cpu_pct, 0, '%')}`);
    s += `| ${label} | ${spread(x.ours.rps, 0)} | ${spread(x.nginx.rps, 0)} | ${spread(x.ratio, 3)} | ${spread(x.ours.p99_ms, 2)} | ${spread(x.nginx.p99_ms, 2)} | ${x.ours.errors} / ${x.nginx.errors} | ${target} | ${v} |\n`;
  }
  s += `\nCPU used by our host process while wrk ran (200% = both cores): ${cpuNotes.join(', ')}. wrk itself
runs on the same two cores.\n`;
  if (g.segment && g.segment.ratio.median < 0.5) {
    s += `\nThe segment target is missed by ${f((0.5 - g.segment.ratio.median) * 100, 1)} points of ratio: ours serves
${f(g.segment.ours.rps.median * g.segment.bytes / 1048576, 0)} MiB/s against nginx's ${f(g.segment.nginx.rps.median * g.segment.bytes / 1048576, 0)} MiB/s.
${SEGMENT_GAP}\n`;
  }
  const a = S.audience;
  s += `
### Simulated audience

One broadcaster PUTs a 2 s 720p segment every 2 s; N viewers (each its own keep-alive connection) fetch
the playlist every target duration and each new segment once, joining 3 segments from the live edge.
N doubles (${r.mode === 'smoke' ? 'smoke: one step' : 'from 10'}) for ${a.step_seconds} s per step, with one bisection step after
the first failure. Pass: no errors and segment p99 < 1 s. Command: \`scripts/bench\` (bench/server.mjs).

**Largest N: ${spread(a.viewers, 0)} viewers.**
`;
  const bound = a.runs.map((run) => run.steps.find((st) => !st.pass)).filter(Boolean);
  if (bound.length) {
    s += `\nWhat bounds it (first failing step of each run): ${bound.map((b) => `N=${b.n}: ${b.note}`).join('; ')}.\n`;
  } else {
    s += '\nNo step failed: the largest N tried passed (the figure is a lower bound).\n';
  }
  const lastPass = a.runs.map((run) => run.steps.filter((st) => st.pass).at(-1)).filter(Boolean);
  if (lastPass.length) s += `\nAt the largest passing N: ${lastPass.map((b) => `N=${b.n}: ${b.note}`).join('; ')}.\n`;
  if (g.segment) {
    s += `\nFor comparison, each viewer needs one ${f(g.segment.bytes / 1048576, 2)} MiB segment every 2 s, so the segment GET
throughput measured above (${f(g.segment.ours.rps.median, 0)} req/s under wrk) would carry about
${f(g.segment.ours.rps.median * 2, 0)} viewers at full load; the audience figure is lower because it also asks for a
segment p99 under 1 s while all viewers fetch the new segment within the same couple of seconds.
${HOST_BOUND}\n`;
  }
  const i = S.ingest;
  s += `
### Ingest

\`PUT\` of a 2 s 720p segment (${f(i.segment_bytes / 1048576, 2)} MiB), one after another on one
keep-alive connection, ${i.puts_per_run} per run: **p50 ${spread(i.put_p50_ms, 1, ' ms')}, p99 ${spread(i.put_p99_ms, 1, ' ms')}**.

Simultaneous broadcasters, each PUTting one 2 s segment every 2 s (phases spread evenly) for
${i.step_seconds} s per step, N doubling from 1. Pass: no errors and every broadcaster keeps up (PUT
p99 < 2 s). **Largest N: ${spread(i.broadcasters, 0)} broadcasters.**
`;
  const ib = i.broadcaster_runs.map((run) => run.steps.find((st) => !st.pass)).filter(Boolean);
  if (ib.length) s += `\nWhat bounds it (first failing step of each run): ${ib.map((b) => `N=${b.n}: ${b.note}`).join('; ')}.\n`;
  else s += '\nNo step failed: the largest N tried passed (the figure is a lower bound).\n';
  return s;
}

function scaling(r) {
  const C = r.parts.scaling;
  let s = '\n## 3. Scaling with stream length\n' + failed(r, 'scaling');
  if (!C) return s + '\nNot measured in this run.\n';
  const last = C.points.at(-1);
  const first = C.points[0];
  s += `
One live stream (retention 0, so nothing is dropped) grows to each size with 1 s segments; at each size
one connection GETs the playlist back to back; nginx then serves the same bytes the same way (the
reference: what sending a playlist of that size costs by itself). Command: \`${first.cmd}\`.

| segments stored | listed | playlist type | bytes | p50 (ms) | p99 (ms) | req/s | nginx p50 / p99 (ms), same bytes |
| --- | --- | --- | --- | --- | --- | --- | --- |
`;
  for (const p of C.points) {
    s += `| ${p.stored} | ${p.listed} | ${p.type} | ${p.playlist_bytes} | ${spread(p.p50_ms, 2)} | ${spread(p.p99_ms, 2)} | ${spread(p.rps, 0)} | ${f(p.nginx_p50_ms?.median, 2)} / ${f(p.nginx_p99_ms?.median, 2)} |\n`;
  }
  const growth = last.p50_ms.median / first.p50_ms.median;
  const ok = last.p99_ms.median <= 10;
  s += `
Target: p99 <= 10 ms at 3600 segments stored, flat in stream length. p99 at ${last.stored} segments:
${f(last.p99_ms.median, 2)} ms — ${verdict(ok && last.stored >= 3600)}${last.stored < 3600 ? ' (this run did not reach 3600 segments)' : ''}${ok ? '' : ` by ${f(last.p99_ms.median - 10, 2)} ms`}.
p50 grows ${f(growth, 2)}x from ${first.stored} to ${last.stored} segments, about
${f((last.p50_ms.median - first.p50_ms.median) / (last.stored - first.stored) * 1000, 1)} µs per stored segment.
${ok ? '' : SCALING_GAP}
`;
  return s;
}

// The panel's threshold for "this computer cannot keep up, choose a lower preset" (pipeline/src/presets.rs,
// `Strain::TOO_SLOW`: ffmpeg.wasm time per media second over its last 6 s).
const TOO_SLOW = 0.85;
const at = (secs) => (secs >= 60 ? `${f(secs / 60, secs % 60 ? 1 : 0)} min` : `${secs} s`);

/** Issue 9: one row per configuration (preset, microphone and camera), with memory at each point. */
function clientConfigs(K) {
  const cs = K.configs ?? [];
  if (!cs.length) return '';
  const points = [...new Set(cs.flatMap((c) => (c.memory ?? []).map((m) => m.at_s)))].sort((a, b) => a - b);
  let s = `
### Per preset, and with the microphone and camera

One row per configuration, each streamed by a fresh browser. CPU is the extension's processes' user+system
time (100% = one core; this machine has two) and the same per media second; ffmpeg.wasm is the remux's wall
time per media second (the panel's own figure) with its worker thread's CPU time beside it; memory is the
PSS of the extension's processes at each point and its growth from the first point to the last. "Picture"
is what ffprobe read from the newest stored segment (frames over its EXTINF duration).

| configuration | picture (ffprobe) | extension CPU, % of a core | extension CPU s per media s | ffmpeg.wasm s per media s | ffmpeg.wasm worker CPU s per media s | ${points.map((p) => `PSS at ${at(p)} (MiB)`).join(' | ')} | PSS growth (MiB) | uploads dropped |
| --- | --- | --- | --- | --- | --- | ${points.map(() => '---').join(' | ')} | --- | --- |
`;
  for (const c of cs) {
    if (!c.windows) {
      s += `| ${c.describe} | **failed**: ${(c.problems ?? []).join('; ')} | ${['', '', '', '', ...points.map(() => ''), '', ''].join(' | ')}|\n`;
      continue;
    }
    const pic = c.segment ? `${c.segment.width}x${c.segment.height}, ${f(c.segment.fps, 1)} fps${c.ok ? '' : ` — **${c.problems.join('; ')}**`}` : 'n/a';
    const mem = points.map((p) => { const m = c.memory.find((x) => x.at_s === p); return m ? f(m.pss_mib, 1) : '—'; });
    const first = c.memory[0]; const last = c.memory.at(-1);
    const growth = c.memory.length > 1 ? `${f(c.pss_growth_mib, 1)} (${at(first.at_s)} → ${at(last.at_s)})` : 'n/a';
    s += `| ${c.describe} | ${pic} | ${win(spread(c.cpu_pct, 0, '%'))} | ${win(spread(c.cpu_s_per_media_s, 3))} | ${win(spread(c.ffmpeg_s_per_media_s, 3))} | ${win(spread(c.ffmpeg_cpu_s_per_media_s, 3))} | ${mem.join(' | ')} | ${growth} | ${c.final_status?.segments_dropped ?? 'n/a'} |\n`;
  }
  const measured = cs.filter((c) => c.windows?.length);
  const comp = measured.filter((c) => c.overlay && Number.isFinite(c.composite_ms_avg));
  if (comp.length) {
    s += `\nCompositing the camera into the tab's picture took ${comp.map((c) => `${f(c.composite_ms_avg, 2)} ms (${c.name})`).join(', ')}
of the offscreen document's main thread per frame (the extension's own average), the thread that also carries
ffmpeg.wasm's messages and the uploads.\n`;
  }
  const slow = measured.filter((c) => c.segment && c.segment.fps < 27);
  if (slow.length) {
    s += `\n**Fewer than 30 frames per second reached the server** for ${slow.map((c) => `${c.name} (${f(c.segment.fps, 1)} fps)`).join(', ')}:
the tab's own rendering and its capture (in the tab's renderer and the browser process, outside the figures above) did
not keep up on this machine, so those rows encode fewer frames than the preset asks for.\n`;
  }
  s += `
The panel tells the streamer to choose a lower preset when ffmpeg.wasm takes more than ${TOO_SLOW} s per media second over
its last 6 s (\`Strain::TOO_SLOW\` in pipeline/src/presets.rs), or when two or more segments stay waiting for 6 s
(uploads fall behind). The benchmark reads the status every 2 s and applies the same rule:

| configuration | 6 s views | highest ffmpeg.wasm s per media s over 6 s | views above ${TOO_SLOW} | views with uploads behind | most segments waiting |
| --- | --- | --- | --- | --- | --- |
`;
  for (const c of measured) {
    const p = c.panel;
    s += p ? `| ${c.name} | ${p.windows} | ${f(p.max_remux_per_media_s, 3)} | ${p.over_too_slow} | ${p.uploads_behind} | ${p.max_waiting} |\n`
      : `| ${c.name} | n/a | ${f(c.ffmpeg_s_per_media_s?.max, 3)} (worst ${WINDOW_NOTE}) | — | — | — |\n`;
  }
  const warned = measured.filter((c) => c.panel && (c.panel.over_too_slow > 0 || c.panel.uploads_behind > 0));
  s += `\n${warned.length ? `**The panel would have advised a lower preset** for ${warned.map((c) => c.name).join(', ')} in this run.`
    : measured.length ? 'The panel would not have advised a lower preset for any configuration in this run.'
      : 'No configuration ran long enough in this run to say.'}\n`;
  return s;
}
const WINDOW_NOTE = '30 s window';

function client(r) {
  const K = r.parts.client;
  let s = '\n## 4. Client cost (extension, 30 fps)\n' + failed(r, 'client');
  if (!K) return s + '\nNot measured in this run.\n';
  const main = K.configs?.find((c) => c.name === K.main_config);
  s += `
${K.method}

Command: \`${K.cmd}\`.
${clientConfigs(K)}`;
  if (!K.memory) return s;
  s += `
### ${main ? main.describe : 'The default preset'}: against the targets

| figure | value | target | verdict |
| --- | --- | --- | --- |
| ffmpeg.wasm time per media second | ${win(spread(K.ffmpeg_s_per_media_s, 3, ' s'))} | <= 0.1 s | ${Number.isFinite(K.ffmpeg_s_per_media_s?.median) ? verdict(K.ffmpeg_s_per_media_s.median <= 0.1) : 'not measured (no steady window)'} |
| ffmpeg.wasm worker thread CPU per media second (/proc, independent check) | ${win(spread(K.ffmpeg_cpu_s_per_media_s, 3, ' s'))} | — | — |
| CPU time of the extension's processes per media second | ${win(spread(K.cpu_s_per_media_s, 3, ' s'))} | — | — |
`;
  for (const m of K.memory) {
    s += `| memory after ${m.at_s >= 60 ? `${f(m.at_s / 60, 0)} min` : `${m.at_s} s`} (extension processes, PSS / JS heap) | ${f(m.pss_mib, 1)} MiB / ${f(m.js_heap_mib, 1)} MiB | — | — |\n`;
  }
  const growth = K.memory.length > 1 ? K.memory.at(-1).pss_mib - K.memory[0].pss_mib : NaN;
  s += `| memory growth minute 1 → ${f(K.memory.at(-1)?.at_s / 60, 0)} | ${f(growth, 1)} MiB | < 20 MB (minute 1 → 30) | ${K.memory.at(-1)?.at_s >= 1800 ? verdict(growth < 20 * 1e6 / 1048576) : 'not run to 30 min (use `--long`)'} |\n`;
  const ff = K.ffmpeg_s_per_media_s?.median;
  const ffCpu = K.ffmpeg_cpu_s_per_media_s?.median;
  if (ff > 0.1) {
    s += `\nffmpeg.wasm misses its target by ${f(ff - 0.1, 3)} s per media second (${f(ff / 0.1, 1)}x).`;
    if (ffCpu < ff / 2) {
      s += ` Its worker thread used only ${f(ffCpu, 3)} s of CPU per media second in the same
windows, so most of the remux's wall time is spent waiting, not computing: for a core (two cores here,
shared with the captured tab's rendering, the H.264 encoder, the host and the benchmark) and for the
round trips between the offscreen document and the ffmpeg worker (each segment is written into
ffmpeg's in-memory file system, remuxed, read back and deleted: four messages and two copies).
What would close the gap: fewer round trips per segment (one message that carries the input and
returns the output), or a JavaScript/Rust MPEG-TS muxer in the offscreen document for the video copy
(the only work ffmpeg does besides Opus -> AAC), run on a machine with a free core.`;
    } else {
      s += ` The worker thread's CPU time (${f(ffCpu, 3)} s per media second) shows the remux is
compute-bound. What would close the gap: the remux only copies the video, so the cost is Opus -> AAC
transcoding and ffmpeg's per-call set-up; recording AAC directly where MediaRecorder supports it, or a
native-code muxer in Rust/wasm for the video copy, would cut it.`;
    }
    s += '\n';
  }
  if (K.notes) s += `\n${K.notes}\n`;
  return s;
}

function lowLatency(r) {
  const L = r.parts.ll;
  let s = '\n## 5. Low-latency HLS on the server\n' + failed(r, 'll');
  if (!L) return s + '\nNot measured in this run.\n';
  const a = L.audience;
  const b = a.at_best;
  s += `
Command: \`${L.cmd}\`. A simulated broadcaster uploads a 2 s 720p segment as ${a.parts} parts of
${a.part_ms} ms in real time (wire contract v2) and seals each segment. Every simulated viewer plays as
hls.js does in low-latency mode, on two keep-alive connections: a playlist loader makes blocking
reloads (delta updates, \`_HLS_skip=YES\`) for the part named by \`EXT-X-PRELOAD-HINT\`, one after
another; a part loader loads the parts in order from the one it joined at: a listed part at once, the
hinted one held by the server until it exists. A part is never skipped, so a viewer the server serves
too slowly falls behind. A hinted part the broadcaster never makes (it sealed the segment first) is
answered 404 and is not an error if the playlists then list the segment sealed without it. The viewers
join a stream whose window already holds ${a.window_segments ?? 0} segments. A step passes when no request
failed, the part requests' p99 (which includes the wait for the part to exist, up to one part
target) stays under 1 s, the parts reached the viewers in time (from the answer to a part's upload to
its delivery, p99 under 1 s), and the viewers kept up (each fetched at least 90% of the parts made
since it joined). Viewers double per ${a.step_seconds} s step until one fails. The load generator is
one Node process on the same two cores, with a hand-written HTTP/1.1 client; its CPU is
reported below. Host memory per held request is the host's RSS growth during the step over twice the
viewers (each holds two). Key-value reads per request are counted in one more step${a.reads ? ` of ${a.reads.viewers} viewers` : ''}, on
a host that logs each request's reads (a line per request, so not in the timed steps); a blocking reload's
count includes its checks while held and the playlist it answers with.

| figure | value | target | verdict |
| --- | --- | --- | --- |
| viewers held at the live edge | ${spread(a.viewers, 0)} | >= 320 | ${verdict(a.viewers.median >= 320)} |
`;
  if (b) {
    s += `| at ${b.n} viewers${b.steps ? ` (the step passed in ${b.passed} of ${b.steps} runs)` : ''}: requests per viewer per second | ${spread(b.requests_per_viewer_s, 2)} | — | — |
| at ${b.n} viewers: part request p99 (ms) | ${spread(b.part_p99_ms, 0)} | < 1000 | ${verdict(b.part_p99_ms.median < 1000)} |
${b.late_p99_ms ? `| at ${b.n} viewers: part upload to delivery p99 (ms) | ${spread(b.late_p99_ms, 0)} | < 1000 | ${verdict(b.late_p99_ms.median < 1000)} |
` : ''}| at ${b.n} viewers: blocking reload p99 (ms) | ${spread(b.reload_p99_ms, 0)} | — | — |
| at ${b.n} viewers: host memory per held request (KiB) | ${spread(b.host_kib_per_held, 0)} | — | — |
| at ${b.n} viewers: host CPU (%, 200 = both cores) | ${spread(b.server_cpu_pct, 0)} | — | — |
${b.client_cpu_pct ? `| at ${b.n} viewers: the load generator's own CPU (%, same cores) | ${spread(b.client_cpu_pct, 0)} | — | — |
` : ''}${a.reads ? `| key-value reads per blocking reload (${a.reads.viewers} viewers, counted): mean (p99, max) | ${f(a.reads.reload.mean, 1)} (${a.reads.reload.p99}, ${a.reads.reload.max}) | — | — |
| key-value reads per part request (same): mean (p99, max) | ${f(a.reads.part.mean, 1)} (${a.reads.part.p99}, ${a.reads.part.max}) | — | — |
` : ''}`;
  }
  const k = L.skip;
  s += `
Delta updates: a retention-0 v2 stream of ${k.segments} sealed 2 s segments; its live playlist read whole
and with \`_HLS_skip=YES\` (${k.skip?.requests} sequential requests each).

| reload at ${k.segments} segments | bytes | p50 (ms) | p99 (ms) | target | verdict |
| --- | --- | --- | --- | --- | --- |
| whole playlist | ${k.full?.bytes} | ${f(k.full?.p50_ms, 2)} | ${f(k.full?.p99_ms, 2)} | — | — |
| \`_HLS_skip=YES\` | ${k.skip?.bytes} | ${f(k.skip?.p50_ms, 2)} | ${f(k.skip?.p99_ms, 2)} | <= 16 KiB, p99 <= 10 ms | ${verdict(k.skip?.bytes <= 16384 && k.skip?.p99_ms <= 10)} |
`;
  if (L.notes) s += `\n${L.notes}\n`;
  return s;
}

function scaleOut(r) {
  const X = r.parts.scaleout;
  let s = '\n## 6. One instance or two on one Redis\n' + failed(r, 'scaleout');
  if (!X) return s + '\nNot measured in this run.\n';
  return `${s}
Command: \`scripts/bench (bench/scaleout.mjs)\`. The same component in the bundled host: one instance on
its SQLite file, one on a real \`redis-server\` (runtime config \`type = "redis"\`), and two instances
on that one Redis, wrk spreading its connections over them. All on this one machine, so read the two-
instance rows as what each instance costs, not as capacity: both instances, Redis and wrk share the
same cores.

${renderScaleOut(X)}
`;
}

function reads(r) {
  const R = r.parts.reads;
  const s = '\n## 7. Key-value reads per request\n' + failed(r, 'reads');
  if (!R) return s + '\nNot measured in this run.\n';
  return s + renderReads(R);
}

/** The whole BENCHMARKS.md for one run's results. */
export function render(r) {
  return `${header(r)}${latency(r)}${server(r)}${scaling(r)}${client(r)}${lowLatency(r)}${scaleOut(r)}${reads(r)}${r.notes ? `\n## Notes\n\n${r.notes}\n` : ''}`;
}
