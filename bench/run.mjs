//! The benchmark suite's driver: runs each part for the chosen mode and writes BENCHMARKS.md (scripts/bench calls it).

import { writeFileSync, mkdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { render } from './report.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Durations and counts per mode. Every load is bounded in time and in count. */
export const MODES = {
  smoke: {
    runs: 1, wrkSeconds: 1,
    audience: { ns: [3], stepSeconds: 2 },
    ingest: { puts: 3 }, broadcasters: { ns: [2], stepSeconds: 2 },
    scaling: { counts: [10, 20], wrkSeconds: 1 },
    latency: { settings: [{ segment_s: 2, low_latency: true }], seconds: 3, runs: 1 },
    // One configuration, the one that needs the most set up (fake microphone and camera, their permission).
    client: { points: [4], configs: ['720p+mic+camera'] },
    ll: { ns: [3], stepSeconds: 3, windowSegments: 5, skipSegments: 20, skipRequests: 20, readsViewers: 3 },
    // The property test over HTTP with its fixed seed (8 cases), as scripts/test runs it.
    reads: { propertySecs: 0 },
  },
  default: {
    runs: 3, wrkSeconds: 5,
    audience: { ns: [10, 20, 40, 80, 160, 320, 640], stepSeconds: 16 },
    ingest: { puts: 40 }, broadcasters: { ns: [1, 2, 4, 8, 16, 32, 64, 128], stepSeconds: 12 },
    scaling: { counts: [10, 600, 3600], wrkSeconds: 3 },
    latency: {
      settings: [{ segment_s: 2, low_latency: true }, { segment_s: 2, low_latency: true, mic: true, overlay: true },
        { segment_s: 1, low_latency: false },
        { segment_s: 2, low_latency: false }, { segment_s: 6, low_latency: false }],
      seconds: 60, runs: 3,
    },
    // Every configuration of bench/client.mjs (the three presets, 720p with microphone and camera), 2 minutes each.
    client: { points: [60, 120] },
    ll: { ns: [10, 20, 40, 80, 160, 320, 480, 640], stepSeconds: 12, windowSegments: 300, skipSegments: 3600, skipRequests: 400, readsViewers: 40 },
    reads: { propertySecs: 180 },
  },
};
// --presets: the client part measures every configuration for 10 minutes (issue 9: memory over 10 minutes).
MODES.presets = { ...MODES.default, client: { points: [60, 600] } };
// --long: as --presets, and the default configuration on to 30 minutes.
MODES.long = { ...MODES.default, client: { points: [60, 600],
  configs: ['480p', { name: '720p', points: [60, 600, 1800] }, '1080p', '720p+mic+camera'] } };

const PARTS = {
  server: async (ctx) => (await import('./server.mjs')).runServer(ctx),
  scaling: async (ctx) => (await import('./scaling.mjs')).runScaling(ctx),
  latency: async (ctx) => (await import('./latency.mjs')).runLatency(ctx),
  client: async (ctx) => (await import('./client.mjs')).runClient(ctx),
  ll: async (ctx) => (await import('./ll.mjs')).runLowLatency(ctx),
  scaleout: async (ctx) => (await import('./scaleout.mjs')).runScaleOut(ctx),
  reads: async (ctx) => (await import('./reads.mjs')).runReads(ctx),
};

function sh(cmd, args) {
  // Some tools (nginx -v) print their version on stderr: take both.
  try { return execFileSync('sh', ['-c', '"$0" "$@" 2>&1', cmd, ...args], { encoding: 'utf8' }).trim(); } catch (e) {
    return (e.stderr || e.stdout || '').toString().trim() || 'unknown';
  }
}

export function machine() {
  const cpus = os.cpus();
  return {
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    nproc: Number(sh('nproc', [])) || cpus.length,
    cpu: cpus[0]?.model ?? 'unknown',
    memory_gib: os.totalmem() / 2 ** 30,
    kernel: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    wrk: sh('wrk', ['-v']).split('\n')[0].replace(/ Copyright.*/, '').trim(),
    nginx: sh('/usr/sbin/nginx', ['-v']).replace(/^nginx version: /, ''),
    chromium: sh('/usr/bin/chromium', ['--version']).split('\n').at(-1),
    ffmpeg: sh('ffmpeg', ['-version']).split('\n')[0].replace(/ Copyright.*/, ''),
    commit: sh('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD']),
    load_before: os.loadavg().map((x) => x.toFixed(2)).join(' '),
  };
}

async function main() {
  const args = process.argv.slice(2);
  const renderIdx = args.indexOf('--render');
  if (renderIdx >= 0) {
    // Re-render a report from saved raw figures: bench/run.mjs --render target/bench/results-default.json --out FILE
    const { readFileSync } = await import('node:fs');
    const saved = JSON.parse(readFileSync(args[renderIdx + 1], 'utf8'));
    const o = args.indexOf('--out');
    writeFileSync(o >= 0 ? args[o + 1] : join(ROOT, 'BENCHMARKS.md'), render(saved));
    return;
  }
  const mode = args.includes('--smoke') ? 'smoke' : args.includes('--long') ? 'long'
    : args.includes('--presets') ? 'presets' : 'default';
  const outIdx = args.indexOf('--out');
  const out = outIdx >= 0 ? args[outIdx + 1] : join(ROOT, 'BENCHMARKS.md');
  const onlyIdx = args.indexOf('--only');
  const only = onlyIdx >= 0 ? args[onlyIdx + 1].split(',') : Object.keys(PARTS);
  const cfg = MODES[mode];
  const log = (m) => console.log(m);
  const results = { mode, machine: machine(), parts: {}, failures: {} };
  // The highest 1-minute load average seen during the run says how shared the machine was.
  let loadMax = os.loadavg()[0];
  const loadTimer = setInterval(() => { loadMax = Math.max(loadMax, os.loadavg()[0]); }, 5000);
  for (const name of only) {
    if (!PARTS[name]) throw new Error(`unknown part ${name}; parts are ${Object.keys(PARTS).join(', ')}`);
    const t0 = performance.now();
    log(`bench: part ${name} (${mode})`);
    try {
      results.parts[name] = await PARTS[name]({ root: ROOT, cfg, mode, log });
    } catch (e) {
      // A part may hand back what it did measure (client: the configurations that worked).
      if (e.result) results.parts[name] = e.result;
      results.failures[name] = e.message;
      console.error(`bench: part ${name} FAILED: ${e.stack || e.message}`);
    }
    log(`bench: part ${name} took ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  }
  clearInterval(loadTimer);
  results.machine.load_after = os.loadavg().map((x) => x.toFixed(2)).join(' ');
  results.machine.load_max = Math.max(loadMax, os.loadavg()[0]).toFixed(2);
  results.machine.seconds = Math.round(performance.now() / 1000);
  const rawDir = join(ROOT, 'target', 'bench');
  mkdirSync(rawDir, { recursive: true });
  writeFileSync(join(rawDir, `results-${mode}.json`), JSON.stringify(results, null, 1));
  writeFileSync(out, render(results));
  log(`bench: wrote ${out} (raw figures in target/bench/results-${mode}.json)`);
  if (Object.keys(results.failures).length) {
    console.error(`bench: ${Object.keys(results.failures).length} part(s) failed: ${Object.keys(results.failures).join(', ')}`);
    process.exit(1);
  }
}

// Run only as a script (node bench/run.mjs), never as a side effect of an import.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e) => { console.error(`bench: ${e.stack || e.message}`); process.exit(1); });
}
