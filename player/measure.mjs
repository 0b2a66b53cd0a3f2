// Measures the viewer against the real component in the test host (prints
// numbers; asserts nothing): time from page load to first frame for a live
// and an ended stream, and the steady delay behind live with hls.js's default
// settings and with ours, for 2 s and 1 s segments.
//   node player/measure.mjs [--seconds 40]
// Needs target/release/chalkstream-host and the built component (see README).
import { chromium } from 'playwright-core';
import { startServer } from '../tests/e2e/lib/server.mjs';
import { encodeSegments, newSession, streamId, pushLive, end } from '../tests/e2e/lib/push.mjs';

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const STREAM_SECONDS = arg('seconds', 40);
const SETTLE_SECONDS = 15; // delay samples start this long after the page opened
const ARGS = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const VARIANTS = { ours: undefined, 'hls.js defaults': {} };

const server = await startServer();
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ARGS });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function open(id, hls) {
  const context = await browser.newContext({ viewport: { width: 960, height: 600 } });
  const page = await context.newPage();
  if (hls) await page.addInitScript((h) => { window.chalkstreamPlayerConfig = { hls: h }; }, hls);
  await page.goto(`${server.url}/play/${id}`);
  return page;
}

const firstFrame = async (page) => {
  const at = await (await page.waitForFunction(
    () => window.chalkstreamPlayer.firstFrameAt, null, { timeout: 30_000 })).jsonValue();
  await page.evaluate(() => {
    window.stalls = 0;
    window.chalkstreamPlayer.video.addEventListener('waiting', () => { window.stalls += 1; });
  });
  return at;
};

const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return `median ${q(0.5).toFixed(2)} s (p10 ${q(0.1).toFixed(2)}, p90 ${q(0.9).toFixed(2)}, n=${s.length})`;
};

try {
  for (const seconds of [2, 1]) {
    const segments = await encodeSegments({ seconds, count: Math.ceil(STREAM_SECONDS / seconds) });
    const session = newSession();
    const id = streamId(session);
    let stored = 0;
    const pushing = pushLive({ url: server.url, session, segments, onSegment: () => { stored += 1; } });
    while (stored < 2) await sleep(50);

    const pages = Object.fromEntries(await Promise.all(
      Object.entries(VARIANTS).map(async ([name, hls]) => [name, await open(id, hls)]),
    ));
    const openedAt = Date.now();
    const frames = await Promise.all(Object.values(pages).map(firstFrame));
    const delays = Object.fromEntries(Object.keys(pages).map((name) => [name, []]));
    while (stored < segments.length) {
      if (Date.now() - openedAt > SETTLE_SECONDS * 1000) {
        for (const [name, page] of Object.entries(pages)) {
          const delay = await page.evaluate(() => window.chalkstreamPlayer.delay);
          if (delay != null) delays[name].push(delay);
        }
      }
      await sleep(500);
    }
    await pushing;
    await end({ url: server.url, session });

    console.log(`\n${seconds} s segments, ${segments.length} segments pushed in real time`);
    Object.keys(pages).forEach((name, i) => {
      console.log(`  ${name.padEnd(16)} live: first frame ${Math.round(frames[i])} ms after page load; `
        + `delay behind live ${stats(delays[name])}`);
    });
    for (const [name, page] of Object.entries(pages)) {
      console.log(`  ${name.padEnd(16)} stalls after the first frame: ${await page.evaluate(() => window.stalls)}`);
    }
    await Promise.all(Object.values(pages).map((p) => p.context().close()));

    const ended = await open(id);
    console.log(`  ${'ours'.padEnd(16)} ended: first frame ${Math.round(await firstFrame(ended))} ms after page load`);
    await ended.context().close();
  }
} finally {
  await browser.close();
  await server.stop();
}
