//! The streamer's side for the browser benchmarks: the real extension (extension/dist) in its own headless
//! Chromium, set up through chrome.storage and started on a tab through its own worker message, as the popup does.

import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS } from './viewer.mjs';
import { descendants, processes } from './proc.mjs';
import { sleep } from './http.mjs';

// CHALKSTREAM_EXTENSION_DIST points the bench at another build of the extension (an A/B run against an
// older commit's extension/dist, with this checkout's server and player).
const DIST = resolve(process.env.CHALKSTREAM_EXTENSION_DIST
  || join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'extension', 'dist'));

/** Chrome's id for an unpacked extension: SHA-256 of its absolute path, first 32 hex digits mapped to a–p. */
export function unpackedExtensionId(path) {
  return [...createHash('sha256').update(path).digest('hex').slice(0, 32)]
    .map((c) => String.fromCharCode(97 + parseInt(c, 16))).join('');
}

/**
 * Launch Chromium with the extension, pointed at `serverUrl` with `segmentSeconds` segments, uploaded
 * in parts (low latency, the default) unless `lowLatency` is false, at preset `quality` ("480p", "720p",
 * "1080p"; pipeline/src/presets.rs), with the microphone mixed into the tab's sound (`mic`) and the camera
 * in the bottom-right corner (`overlay`) when asked.
 * `--allowlisted-extension-id` lets the extension capture a tab without a click on its toolbar button
 * (Chrome's switch for automated tab capture); everything else runs as for a user. For the microphone and
 * the camera, Chromium's built-in fake devices (a beep, a moving test pattern at the size asked for) stand
 * in, and their permission is granted to the extension over the DevTools protocol, as
 * tests/e2e/extension-streamer.test.mjs does (the fake-UI flag would break tab capture). An allowlisted
 * extension is refused every device but the tab (getUserMedia answers NotAllowedError even with the
 * permission granted), so with the microphone or camera on the broadcast starts as a user starts it: a
 * real click on the toolbar button (CDP `Extensions.triggerAction`), no allowlisting.
 */
export async function launchBroadcaster({ serverUrl, segmentSeconds, lowLatency = true, quality = '720p', mic = false,
  overlay = false }) {
  if (!existsSync(join(DIST, 'manifest.json'))) throw new Error('extension/dist is missing: run scripts/build');
  const dir = mkdtempSync(join(tmpdir(), 'chalkstream-broadcaster-'));
  const id = unpackedExtensionId(DIST);
  const devices = mic || overlay;
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: '/usr/bin/chromium', headless: false, viewport: { width: 1280, height: 720 },
    args: [...CHROMIUM_ARGS, `--disable-extensions-except=${DIST}`, `--load-extension=${DIST}`,
      '--autoplay-policy=no-user-gesture-required',
      ...(devices ? ['--use-fake-device-for-media-stream', '--enable-unsafe-extension-debugging']
        : [`--allowlisted-extension-id=${id}`])],
  });
  const close = async () => { await context.close().catch(() => {}); rmSync(dir, { recursive: true, force: true }); };
  try {
    const worker = context.serviceWorkers()[0] ?? await context.waitForEvent('serviceworker', { timeout: 30_000 });
    const workerId = new URL(worker.url()).host;
    if (workerId !== id) throw new Error(`extension id ${workerId} is not the expected ${id}`);
    // A control page of the extension: it sets the options and talks to the worker and offscreen document.
    const session = devices ? await context.browser().newBrowserCDPSession() : null;
    if (devices) {
      await session.send('Browser.grantPermissions', { origin: `chrome-extension://${id}`,
        permissions: ['audioCapture', 'videoCapture'] });
    }
    const control = await context.newPage();
    await control.goto(`chrome-extension://${id}/options.html`);
    await control.evaluate(async (options) => chrome.storage.local.set({ options }),
      { server: serverUrl, token: '', segment_seconds: segmentSeconds, default_source: 'tab', low_latency: lowLatency,
        quality, mic, overlay: { on: overlay, corner: 'bottom-right', size: 'medium' } });
    // Chromium's child processes rewrite their command line into one string, so match on the joined text.
    const browserPid = processes((a) => a.includes(`--user-data-dir=${dir}`) && !a.join(' ').includes('--type='))[0]?.pid;
    if (!browserPid) throw new Error('could not find the broadcaster browser process in /proc');
    let startedAt = null;
    return {
      context, id,
      /** The browser's own process: every process of this broadcaster descends from it. */
      browserPid,
      get startedAt() { return startedAt; },
      /** Open `url` in a tab of `size` and stream it; resolves to `{ streamId }` once the broadcast runs. */
      async streamTab(url, { width = 1280, height = 720 } = {}) {
        const tab = await context.newPage();
        await tab.setViewportSize({ width, height });
        await tab.goto(url);
        await tab.bringToFront();
        if (devices) {
          // The toolbar click on this tab (the action wants the tab target, the page target's parent).
          const { targetInfos } = await session.send('Target.getTargets', { filter: [{ type: 'tab' }] });
          const tabs = targetInfos.filter((t) => t.type === 'tab' && t.url === tab.url());
          if (tabs.length !== 1) throw new Error(`expected one tab at ${tab.url()}, found ${tabs.length}`);
          await session.send('Extensions.triggerAction', { id, targetId: tabs[0].targetId });
        } else {
          const answer = await control.evaluate(async (pattern) => {
            const [t] = await chrome.tabs.query({ url: pattern });
            if (!t) return { error: `no tab matches ${pattern}` };
            return chrome.runtime.sendMessage({ to: 'worker', type: 'StartTab', tab_id: t.id });
          }, url.replace(/\?.*$/, '') + '*');
          if (answer !== true) throw new Error(`the extension did not start: ${JSON.stringify(answer)}`);
        }
        startedAt = Date.now();
        const until = Date.now() + 30_000;
        for (;;) {
          const b = await control.evaluate(async () => (await chrome.storage.local.get('broadcast')).broadcast);
          if (b?.stream) return { streamId: b.stream, tab };
          if (Date.now() > until) throw new Error('the extension saved no broadcast within 30 s');
          await sleep(200);
        }
      },
      /** The offscreen document's health (`Status` in pipeline/src/broadcast.rs), or null before it runs. */
      async status() {
        // The offscreen document may be busy (or answer nothing) for a moment: ask up to three times.
        for (let i = 0; i < 3; i++) {
          const st = await control.evaluate(() => chrome.runtime.sendMessage({ to: 'offscreen', type: 'GetStatus' })
            .catch(() => null));
          if (st && typeof st === 'object' && 'phase' in st) return st;
          await sleep(300);
        }
        return null;
      },
      /** The offscreen document's JS heap in bytes, as the extension reports it. */
      async jsHeapBytes() { return (await this.status())?.js_heap_bytes ?? NaN; },
      /** Stop the broadcast as the popup's Stop does. */
      stop: () => control.evaluate(() => chrome.runtime.sendMessage({ to: 'worker', type: 'Stop' })),
      /** Pids of this browser's extension renderer processes (offscreen document, worker, pages). */
      extensionPids: () => (browserPid ? descendants(browserPid)
        .filter((p) => p.args.join(' ').includes('--extension-process')).map((p) => p.pid) : []),
      close,
    };
  } catch (e) {
    await close();
    throw e;
  }
}
