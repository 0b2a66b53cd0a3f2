//! How long each browser's WebCodecs H.264 encoder holds a frame (`scripts/bench --only encoder`).
//!
//! The broadcast page encodes the camera itself where MediaRecorder makes no H.264 (Firefox), with
//! `VideoEncoder` configured as pipeline/src/encode.rs does it (H.264 constrained baseline, the preset's bitrate,
//! 30 fps, `latencyMode: 'realtime'`). Every frame the encoder holds before its chunk comes out is
//! glass-to-glass latency no part size can win back, so this part measures it on its own: for
//! Chromium and Firefox ESR, for 480p and 720p, a canvas drawn at 30 fps is encoded for
//! CHALKSTREAM_ENCODER_SECONDS (default 10; 3 with --smoke) after a one-frame warm-up (encoded and
//! flushed, so the encoder's start-up is not counted), and each frame's hold is the time from
//! `encode()` to its chunk's `output` callback. Prints, per browser and size, the hold's p50, p95
//! and maximum over every frame, the frames in flight that p50 means at 30 fps, and whether the
//! encoder kept up (chunks out per second against frames in). --out FILE writes the table there.

import { createServer } from 'node:http';
import { writeFileSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS } from './lib/viewer.mjs';
import { percentile } from './lib/stats.mjs';
import { launchFirefox } from '../tests/e2e/lib/firefox.mjs';

const smoke = process.argv.includes('--smoke');
const outAt = process.argv.indexOf('--out');
const OUT = outAt > 0 ? process.argv[outAt + 1] : null;
const SECONDS = Number(process.env.CHALKSTREAM_ENCODER_SECONDS || (smoke ? 3 : 10));
const SIZES = [
  // The page asks for level 3.0 (`42E01E`) at every size, which Firefox takes; Chromium holds
  // WebCodecs to the level's picture size, so 720p asks for 3.1 here.
  { name: '480p', width: 854, height: 480, bitrate: 1_000_000, codec: 'avc1.42E01E' },
  { name: '720p', width: 1280, height: 720, bitrate: 2_500_000, codec: 'avc1.42E01F' },
];

/** Runs in the page: resolves to `{ holds: [ms…], chunks, keys, seconds, error }`. */
const measure = (size, seconds) => `(async () => {
  const fps = 30;
  const c = document.createElement('canvas'); c.width = ${size.width}; c.height = ${size.height};
  const g = c.getContext('2d');
  const sent = new Map(); const holds = []; let chunks = 0; let keys = 0; let error = null;
  const enc = new VideoEncoder({
    output: (chunk) => { chunks++; if (chunk.type === 'key') keys++; const t = sent.get(chunk.timestamp); if (t !== undefined) holds.push(performance.now() - t); },
    error: (e) => { error = String(e); },
  });
  enc.configure({ codec: '${size.codec}', width: ${size.width}, height: ${size.height}, bitrate: ${size.bitrate},
    framerate: fps, latencyMode: 'realtime', avc: { format: 'avc' } });
  const draw = (i) => { g.fillStyle = 'hsl(' + ((i * 7) % 360) + ',60%,50%)'; g.fillRect(0, 0, c.width, c.height);
    g.fillStyle = '#fff'; g.font = '80px sans-serif'; g.fillText(String(i), 40 + (i % 400), c.height / 2); };
  draw(0);
  const warm = new VideoFrame(c, { timestamp: 0 }); enc.encode(warm, { keyFrame: true }); warm.close();
  await enc.flush();
  chunks = 0; keys = 0;
  const frames = ${seconds} * fps;
  const t0 = performance.now();
  for (let i = 1; i <= frames; i++) {
    const due = t0 + (i - 1) * 1000 / fps;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    draw(i);
    const ts = i * Math.round(1e6 / fps);
    const f = new VideoFrame(c, { timestamp: ts });
    sent.set(ts, performance.now());
    enc.encode(f, { keyFrame: i % 60 === 0 });
    f.close();
  }
  const fedFor = (performance.now() - t0) / 1000;
  const outBeforeFlush = chunks;
  await enc.flush();
  enc.close();
  return { holds, chunks, keys, fed: frames, fedFor, outBeforeFlush, error };
})()`;

function summarise(browser, version, size, r) {
  const p50 = percentile(r.holds, 50);
  const inFlight = p50 / (1000 / 30);
  return {
    browser, version, size: size.name, frames: r.fed, chunks: r.chunks, error: r.error,
    p50, p95: percentile(r.holds, 95), max: percentile(r.holds, 100), inFlight,
    // Chunks out while frames went in: short of the frames fed by more than the frames in flight
    // means the encoder fell behind.
    keptUp: r.outBeforeFlush + inFlight + 2 >= r.fed,
  };
}

const server = createServer((_, res) => { res.writeHead(200, { 'content-type': 'text/html' }); res.end('<!doctype html><title>encoder</title>'); });
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const url = `http://127.0.0.1:${server.address().port}/`;
const rows = [];
try {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium', args: CHROMIUM_ARGS });
  try {
    const page = await browser.newPage();
    await page.goto(url);
    for (const size of SIZES) {
      rows.push(summarise('Chromium', browser.version(), size, await page.evaluate(measure(size, SECONDS))));
    }
  } finally { await browser.close(); }
  const ff = await launchFirefox();
  try {
    await ff.navigate(url);
    for (const size of SIZES) {
      rows.push(summarise('Firefox', ff.version, size, await ff.evaluate(measure(size, SECONDS))));
    }
  } finally { await ff.close(); }
} finally { server.close(); }

const f2 = (x) => (x === undefined ? '–' : (x / 1000).toFixed(2));
const lines = [
  `Command: \`scripts/bench --only encoder\` (bench/encoder.mjs), ${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}, ${SECONDS} s of 30 fps per row.`,
  '',
  '| browser | size | hold p50 (s) | hold p95 (s) | hold max (s) | frames in flight (p50) | frames in / chunks out | kept up |',
  '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ...rows.map((r) => `| ${r.browser} ${r.version} | ${r.size} | ${f2(r.p50)} | ${f2(r.p95)} | ${f2(r.max)} | ${r.inFlight.toFixed(1)} | ${r.frames} / ${r.chunks}${r.error ? ` (error: ${r.error})` : ''} | ${r.keptUp ? 'yes' : 'no'} |`),
];
console.log(lines.join('\n'));
if (OUT) writeFileSync(OUT, `${lines.join('\n')}\n`);
// A row with no chunks or an encoder error is a failed measurement, not a figure.
process.exit(rows.every((r) => !r.error && r.chunks >= r.frames) ? 0 : 1);
