//! The broadcast page beside the extension (issue 20's bench): glass-to-glass latency and CPU per
//! media second when `GET /broadcast` streams from Chromium and from Firefox ESR, and when the
//! extension streams a tab, each to the same host at default settings (2 s segments, low latency,
//! 720p at 30 fps).
//!
//! Method. The viewer is the latency part's (bench/lib/viewer.mjs): the real player page in its
//! own Chromium reads the wall-clock time drawn into every frame it presents (bench/clock/) and
//! subtracts it from its own clock. The extension streams the clock page as a tab, as in the
//! latency part. The broadcast page streams its "camera": a script that runs before the page's
//! own (Playwright's init script in Chromium, WebDriver BiDi's preload script in Firefox)
//! answers `getUserMedia` with a 1280x720 canvas that draws the same clock on every animation
//! frame (`captureStream(30)`), and the browser's fake microphone for the sound. So the camera's
//! own delay is left out, as tab capture leaves out a screen's, and everything from the picture
//! to the viewer is measured: the page's recorder (Chromium's MediaRecorder; Firefox's WebCodecs
//! encoder), the shared pipeline, the upload, the server and the player.
//!
//! CPU: the broadcasting browser's whole process tree (its /proc utime + stime, the browser,
//! renderers, GPU and utility processes) over the same window as the latency samples, divided by
//! the media seconds the pipeline cut in it (`media_ms_total`). For the extension this includes
//! the clock tab it captures; for the page, the clock canvas drawn in the page itself.
//!
//! Percentiles are pooled over every frame of every run; the worst run (highest p95) is shown
//! beside them; a run counts as frozen when its page showed no frame for more than 5 s. Verdicts
//! are computed against the low-latency targets (p50 <= 1.5 s, p95 <= 2 s, none frozen).
//!
//! `scripts/bench --only page` (about 12 minutes: 3 runs of 60 s for each broadcaster);
//! `--smoke`: one 15 s run each. CHALKSTREAM_PAGE_RUNS, CHALKSTREAM_PAGE_SECONDS, and
//! CHALKSTREAM_PAGE_BROADCASTERS (extension,chromium,firefox) change that. Prints the table,
//! writes target/bench/page-<mode>.json, and the table to `--out FILE` when given.

import { readFileSync, writeFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import { chromium } from 'playwright-core';
import { startHost } from './lib/host.mjs';
import { startClockServer } from './lib/clock-server.mjs';
import { CHROMIUM_ARGS, launchViewer, openPlayer } from './lib/viewer.mjs';
import { launchBroadcaster } from './lib/broadcaster.mjs';
import { cpuSeconds, descendants, processes } from './lib/proc.mjs';
import { percentile, summary } from './lib/stats.mjs';
import { sleep } from './lib/http.mjs';
import { firstFrame } from './latency.mjs';
import { launchFirefox } from '../tests/e2e/lib/firefox.mjs';
import { until } from '../tests/e2e/lib/browser.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const smoke = args.includes('--smoke');
const outFile = args.includes('--out') ? args[args.indexOf('--out') + 1] : null;
const RUNS = Number(process.env.CHALKSTREAM_PAGE_RUNS) || (smoke ? 1 : 3);
const SECONDS = Number(process.env.CHALKSTREAM_PAGE_SECONDS) || (smoke ? 15 : 60);
const WHO = (process.env.CHALKSTREAM_PAGE_BROADCASTERS || 'extension,chromium,firefox').split(',');
const TARGET = { p50: 1.5, p95: 2.0, frozen_s: 5 };
const NAMES = {
  extension: 'the extension, a tab (Chromium)',
  chromium: 'the broadcast page, Chromium (MediaRecorder H.264)',
  firefox: 'the broadcast page, Firefox ESR (WebCodecs H.264)',
};

const CLOCK_JS = readFileSync(join(root, 'bench', 'clock', 'clock.js'), 'utf8');
/** Runs before the broadcast page's scripts: its camera becomes a canvas showing the clock. */
const CLOCK_CAMERA = `(() => {
  ${CLOCK_JS}
  const devices = navigator.mediaDevices;
  if (!devices) return;
  const original = devices.getUserMedia.bind(devices);
  devices.getUserMedia = async (constraints) => {
    const canvas = document.createElement('canvas');
    canvas.width = 1280; canvas.height = 720;
    const g = canvas.getContext('2d');
    const draw = () => { drawClock(g, canvas.width, canvas.height, Date.now()); requestAnimationFrame(draw); };
    draw();
    const tracks = canvas.captureStream(30).getVideoTracks();
    if (constraints && constraints.audio) tracks.push(...(await original({ audio: true })).getAudioTracks());
    window.__benchClockCamera = true;
    return new MediaStream(tracks);
  };
})();`;

/** CPU seconds of `pid` and every process under it, now. */
function treeCpu(pid) {
  return [pid, ...descendants(pid).map((p) => p.pid)].map(cpuSeconds).filter(Number.isFinite).reduce((a, b) => a + b, 0);
}

/** Debian's Chromium, as it names itself ("Chromium 156.0.…"). */
const CHROMIUM_VERSION = execFileSync('chromium', ['--version']).toString().trim().split(' ').slice(0, 2).join(' ');

/** Starts one broadcaster: `{ stream, pid, version, status(), stop(), close() }`. */
async function startBroadcaster(who, { server, clock }) {
  if (who === 'extension') {
    const b = await launchBroadcaster({ serverUrl: server.url, segmentSeconds: 2, lowLatency: true });
    try {
      const { streamId } = await b.streamTab(`${clock.url}/clock.html`, { width: 1280, height: 720 });
      return { stream: streamId, pid: b.browserPid, version: CHROMIUM_VERSION, status: () => b.status(), stop: () => b.stop(), close: () => b.close() };
    } catch (e) { await b.close(); throw e; }
  }
  const panel = (expr) => `(() => { const d = document.body.dataset; return ${expr}; })()`;
  if (who === 'chromium') {
    // A profile of its own, so its browser process can be told from the viewer's in /proc.
    const dir = mkdtempSync(join(tmpdir(), 'chalkstream-page-'));
    const context = await chromium.launchPersistentContext(dir, { executablePath: '/usr/bin/chromium', headless: false,
      viewport: { width: 1280, height: 720 },
      args: [...CHROMIUM_ARGS, '--autoplay-policy=no-user-gesture-required', '--use-fake-device-for-media-stream',
        '--use-fake-ui-for-media-stream'] });
    const close = async () => { await context.close().catch(() => {}); rmSync(dir, { recursive: true, force: true }); };
    try {
      const pid = processes((a) => a.includes(`--user-data-dir=${dir}`) && !a.join(' ').includes('--type='))[0]?.pid;
      if (!pid) throw new Error('could not find the page\'s browser process in /proc');
      await context.addInitScript({ content: CLOCK_CAMERA });
      const page = await context.newPage();
      await page.goto(`${server.url}/broadcast`);
      const stream = await until(() => page.evaluate(panel('d.stream')), { what: 'the page to load', timeout: 30_000 });
      await page.click('#go');
      await until(() => page.evaluate(panel("d.phase === 'live'")), { what: 'the page to go live', timeout: 60_000 });
      if (!await page.evaluate(() => window.__benchClockCamera === true)) throw new Error('the clock camera was not used');
      return { stream, pid, version: CHROMIUM_VERSION,
        status: () => page.evaluate(() => (document.body.dataset.status ? JSON.parse(document.body.dataset.status) : null)),
        stop: () => page.click('#stop'), close };
    } catch (e) { await close(); throw e; }
  }
  const ff = await launchFirefox();
  try {
    await ff.preload(CLOCK_CAMERA);
    await ff.navigate(`${server.url}/broadcast`);
    const stream = await until(() => ff.evaluate(panel('d.stream')), { what: 'the page to load', timeout: 30_000 });
    await ff.evaluate(`document.getElementById('go').click()`);
    await until(() => ff.evaluate(panel("d.phase === 'live'")), { what: 'Firefox to go live', timeout: 60_000 });
    if (!await ff.evaluate('window.__benchClockCamera === true')) throw new Error('the clock camera was not used');
    return { stream, pid: ff.pid, version: `Firefox ${ff.version}`,
      status: () => ff.evaluate(panel('d.status ? JSON.parse(d.status) : null')),
      stop: () => ff.evaluate(`document.getElementById('stop').click()`), close: () => ff.close() };
  } catch (e) { await ff.close(); throw e; }
}

async function oneRun(who, { server, clock, viewer, log }) {
  const b = await startBroadcaster(who, { server, clock });
  try {
    const player = await openPlayer(viewer.context, `${server.url}/play/${b.stream}`);
    try {
      const t0 = await firstFrame(player, 90_000);
      const [s0, c0, w0] = [await b.status(), treeCpu(b.pid), performance.now()];
      await sleep(t0 + SECONDS * 1000 - Date.now());
      const [s1, c1, w1] = [await b.status(), treeCpu(b.pid), performance.now()];
      const r = await player.read();
      const window = r.samples.filter((s) => s.t <= t0 + SECONDS * 1000);
      const ms = window.map((s) => s.ms);
      const mediaS = (s1.media_ms_total - s0.media_ms_total) / 1000;
      const run = {
        version: b.version,
        p50: percentile(ms, 50) / 1000, p95: percentile(ms, 95) / 1000,
        samples_ms: ms.map((x) => Math.round(x)), frames: window.length, unreadable: r.unreadable,
        fps: window.length / SECONDS,
        longest_gap_s: window.reduce((m, s, i) => (i ? Math.max(m, s.t - window[i - 1].t) : m), 0) / 1000,
        cpu_s: c1 - c0, media_s: mediaS, wall_s: (w1 - w0) / 1000,
        cpu_per_media_s: (c1 - c0) / mediaS, cpu_pct: (100 * (c1 - c0)) / ((w1 - w0) / 1000),
        remux_per_media_s: s1.media_ms_total ? s1.remux_ms_total / s1.media_ms_total : NaN,
        ack_s: s1.ack_latency_ms_avg / 1000, dropped: s1.segments_dropped ?? 0,
        placed: s1.video_placed ?? NaN, skipped: s1.video_skipped ?? NaN,
      };
      log(`  page ${who}: p50 ${run.p50.toFixed(2)} s, p95 ${run.p95.toFixed(2)} s over ${run.frames} frames `
        + `(${run.unreadable} unreadable), longest without a frame ${run.longest_gap_s.toFixed(2)} s; CPU `
        + `${run.cpu_per_media_s.toFixed(3)} s per media s (${run.cpu_pct.toFixed(0)}% of a core), ffmpeg.wasm `
        + `${run.remux_per_media_s.toFixed(3)} s per media s, ack ${run.ack_s.toFixed(2)} s, frames skipped ${run.skipped}`);
      return run;
    } finally {
      await player.page.close();
    }
  } finally {
    await b.stop().catch(() => {});
    await sleep(1000);
    await b.close();
  }
}

const f2 = (x) => (Number.isFinite(x) ? x.toFixed(2) : '—');
const f3 = (x) => (Number.isFinite(x) ? x.toFixed(3) : '—');

function row(who, runs) {
  const all = runs.flatMap((r) => r.samples_ms);
  const worst = runs.reduce((w, r) => (!w || r.p95 > w.p95 ? r : w), null);
  const frozen = runs.filter((r) => r.longest_gap_s > TARGET.frozen_s).length;
  const pooled = { p50: percentile(all, 50) / 1000, p95: percentile(all, 95) / 1000 };
  const cpu = runs.reduce((a, r) => a + r.cpu_s, 0) / runs.reduce((a, r) => a + r.media_s, 0);
  const met = pooled.p50 <= TARGET.p50 && pooled.p95 <= TARGET.p95 && frozen === 0;
  return {
    who, name: NAMES[who], version: runs[0]?.version, runs: runs.length, pooled, worst: { p50: worst.p50, p95: worst.p95 },
    per_run_p50: summary(runs.map((r) => r.p50)), frozen, frames: runs.reduce((a, r) => a + r.frames, 0),
    unreadable: runs.reduce((a, r) => a + r.unreadable, 0), fps: summary(runs.map((r) => r.fps)),
    cpu_per_media_s: cpu, cpu_per_media_s_runs: summary(runs.map((r) => r.cpu_per_media_s)),
    cpu_pct: summary(runs.map((r) => r.cpu_pct)), remux_per_media_s: summary(runs.map((r) => r.remux_per_media_s)),
    ack_s: summary(runs.map((r) => r.ack_s)), skipped: runs.reduce((a, r) => a + r.skipped, 0),
    dropped: runs.reduce((a, r) => a + r.dropped, 0), verdict: met ? 'met' : 'missed',
  };
}

function table(rows, meta) {
  const lines = [
    `Command: \`${meta.cmd}\`, ${meta.date}, ${meta.machine}; load average ${meta.load_before} before, ${meta.load_after} after.`,
    '',
    '| broadcaster | browser | p50 (s), pooled | p95 (s), pooled | worst run p50 / p95 (s) | per-run p50 (s) | frozen runs | frames shown per s | CPU s per media s (whole browser) | % of a core | ffmpeg.wasm s per media s | upload ack (s) | frames skipped | target | verdict |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...rows.map((r) => `| ${r.name} | ${r.version} | ${f2(r.pooled.p50)} | ${f2(r.pooled.p95)} | ${f2(r.worst.p50)} / ${f2(r.worst.p95)} `
      + `| ${f2(r.per_run_p50.median)} (${f2(r.per_run_p50.min)}–${f2(r.per_run_p50.max)}, ${r.runs} runs) | ${r.frozen} of ${r.runs} `
      + `| ${r.fps.median.toFixed(1)} | ${f3(r.cpu_per_media_s)} (${f3(r.cpu_per_media_s_runs.min)}–${f3(r.cpu_per_media_s_runs.max)}) `
      + `| ${r.cpu_pct.median.toFixed(0)} | ${f3(r.remux_per_media_s.median)} | ${f2(r.ack_s.median)} | ${r.skipped} `
      + `| p50 <= ${TARGET.p50} s, p95 <= ${TARGET.p95} s, none frozen | **${r.verdict}** |`),
  ];
  return lines.join('\n');
}

async function main() {
  const log = (m) => console.log(m);
  const meta = {
    cmd: `${['CHALKSTREAM_PAGE_RUNS', 'CHALKSTREAM_PAGE_SECONDS', 'CHALKSTREAM_PAGE_BROADCASTERS'].filter((k) => process.env[k])
      .map((k) => `${k}=${process.env[k]} `).join('')}scripts/bench --only page${smoke ? ' --smoke' : ''} (bench/page.mjs)`,
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    machine: `${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB`,
    load_before: os.loadavg().map((x) => x.toFixed(2)).join(' '),
    runs: RUNS, seconds: SECONDS,
  };
  const clock = await startClockServer();
  const server = await startHost(root, 'page');
  const viewer = await launchViewer();
  const runs = Object.fromEntries(WHO.map((w) => [w, []]));
  const failures = [];
  try {
    // Interleaved, so a change in the machine's load touches every broadcaster alike.
    for (let i = 0; i < RUNS; i++) {
      for (const who of WHO) {
        try {
          runs[who].push(await oneRun(who, { server, clock, viewer, log }));
        } catch (e) {
          failures.push(`${who}: ${e.message}`);
          console.error(`page: ${who} run ${i + 1} FAILED: ${e.stack || e.message}`);
        }
      }
    }
  } finally {
    await viewer.close();
    await server.stop();
    await clock.close();
  }
  meta.load_after = os.loadavg().map((x) => x.toFixed(2)).join(' ');
  const rows = WHO.filter((w) => runs[w].length).map((w) => row(w, runs[w]));
  const text = table(rows, meta);
  console.log(`\n${text}\n`);
  mkdirSync(join(root, 'target', 'bench'), { recursive: true });
  writeFileSync(join(root, 'target', 'bench', `page-${smoke ? 'smoke' : 'default'}.json`),
    JSON.stringify({ meta, rows, runs, failures }, null, 1));
  if (outFile) writeFileSync(outFile, `${text}\n`);
  if (failures.length) {
    console.error(`page: ${failures.length} run(s) failed:\n  ${failures.join('\n  ')}`);
    process.exit(1);
  }
}

main().catch((e) => { console.error(`page: ${e.stack || e.message}`); process.exit(1); });
