//! The measuring viewer: the real player page in its own Chromium, reading the latency clock from the frames it shows.

import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const CLOCK_JS = readFileSync(join(dirname(fileURLToPath(import.meta.url)), '..', 'clock', 'clock.js'), 'utf8');

export const CHROMIUM_ARGS = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

// Runs in the player page: on every presented frame (requestVideoFrameCallback), draw it into a small
// canvas, read the clock, and keep `now - clock` next to the player's own PDT-based delay.
const SAMPLER = `(() => {
  ${CLOCK_JS}
  const s = window.__benchLatency = { samples: [], unreadable: 0, frames: 0, running: true, stalls: [] };
  // When hls.js stalled (each stall raises its target latency by liveSyncOnStallIncrease).
  const hooked = new WeakSet();
  const hookStalls = () => {
    const hls = window.chalkstreamPlayer?.hls;
    if (hls && !hooked.has(hls)) {
      hooked.add(hls);
      hls.on('hlsError', (_, d) => {
        if (d.details === 'bufferStalledError') s.stalls.push({ t: Date.now() });
      });
    }
  };
  setInterval(hookStalls, 50);
  const W = 680, H = 384;
  const cv = document.createElement('canvas'); cv.width = W; cv.height = H;
  const g = cv.getContext('2d', { willReadFrequently: true });
  const onFrame = (video) => () => {
    if (!s.running) return;
    try { sample(video); } catch (e) { s.error = String(e); }
    video.requestVideoFrameCallback(onFrame(video));
  };
  const sample = (video) => {
    if (video.readyState >= 2 && !video.paused) {
      g.drawImage(video, 0, 0, W, H);
      const now = Date.now();
      const v = readClock(g.getImageData(0, 0, W, H).data, W, H);
      s.frames++;
      if (v === null) s.unreadable++;
      else {
        const p = window.chalkstreamPlayer;
        s.samples.push({ t: now, ms: ((now % 2 ** 32) - v + 2 ** 32) % 2 ** 32,
          player_ms: p && p.delay != null ? p.delay * 1000 : null,
          edge_ms: p && p.hls && Number.isFinite(p.hls.latency) ? p.hls.latency * 1000 : null,
          target_ms: p && p.hls && Number.isFinite(p.hls.targetLatency) ? p.hls.targetLatency * 1000 : null });
      }
    }
  };
  const wait = () => {
    const video = window.chalkstreamPlayer?.video || document.querySelector('video');
    if (video) video.requestVideoFrameCallback(onFrame(video)); else setTimeout(wait, 50);
  };
  wait();
})();`;

/** Launch the viewer's Chromium (its own profile, so it shares nothing with the broadcaster's). */
export async function launchViewer() {
  const dir = mkdtempSync(join(tmpdir(), 'chalkstream-viewer-'));
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: '/usr/bin/chromium', headless: false, viewport: { width: 1280, height: 720 },
    args: [...CHROMIUM_ARGS, '--autoplay-policy=no-user-gesture-required'],
  });
  return {
    context,
    async close() { await context.close(); rmSync(dir, { recursive: true, force: true }); },
  };
}

/** Open `/play/{id}` and start reading the clock from every frame it presents. */
export async function openPlayer(context, url) {
  const page = await context.newPage();
  // CHALKSTREAM_PLAYER_CONFIG (JSON) is set as window.chalkstreamPlayerConfig before the player's script
  // runs: an A/B run of player settings against the shipped ones (player/src/player.js).
  if (process.env.CHALKSTREAM_PLAYER_CONFIG) {
    await page.addInitScript((json) => { window.chalkstreamPlayerConfig = JSON.parse(json); }, process.env.CHALKSTREAM_PLAYER_CONFIG);
  }
  await page.goto(url);
  await page.evaluate(SAMPLER);
  return {
    page,
    /** Samples so far: `{ samples: [{ t, ms, player_ms }], frames, unreadable }`. */
    read: () => page.evaluate(() => {
      const s = window.__benchLatency;
      return { samples: s.samples, frames: s.frames, unreadable: s.unreadable, error: s.error, stalls: s.stalls,
        state: window.chalkstreamPlayer?.state,
        config: window.chalkstreamPlayer?.config, low_latency: window.chalkstreamPlayer?.lowLatency,
        // What the player did about a stuck playhead or a start far behind (player/src/player.js).
        unstuck: window.chalkstreamPlayer?.unstuck ?? 0, leaps: window.chalkstreamPlayer?.leaps ?? 0,
        rejoins: window.chalkstreamPlayer?.rejoins ?? 0 };
    }),
  };
}
