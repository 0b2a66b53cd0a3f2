// Measures the extension streaming a 1280x720 30 fps animated tab into the real host:
// ffmpeg.wasm time per segment and per media second, last frame -> upload acknowledged, and
// the memory of the extension's renderer process (offscreen document + its ffmpeg worker +
// the service worker) after 1 and 10 minutes. With parts (low latency, the default) the
// ffmpeg.wasm time and the latency are per part. Usage: node extension/measure.mjs [minutes] [--whole]
import { readFileSync, readdirSync } from 'node:fs';
import { startServer } from '../tests/e2e/lib/server.mjs';
import { launchExtension, serveFixtures, sleep } from '../tests/e2e/lib/browser.mjs';

const minutes = Number(process.argv.slice(2).find((a) => /^\d/.test(a)) ?? 10);
const lowLatency = !process.argv.includes('--whole');

/** RSS of the Chromium renderer processes started for extensions, in MiB. */
function extensionRssMiB() {
  let kib = 0;
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      // Chromium rewrites its children's argv into one space-separated string.
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (!cmd.includes('chromium') || !cmd.includes('--extension-process')) continue;
      kib += Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]);
    } catch { /* process went away */ }
  }
  return kib / 1024;
}

const server = await startServer({ env: { stream_retention: 0 } });
const fixtures = await serveFixtures();
const ext = await launchExtension();
try {
  await ext.setOptions({ server: server.url, segment_seconds: 2, low_latency: lowLatency });
  const page = await ext.context.newPage();
  await page.setViewportSize({ width: 1280, height: 720 });
  await page.goto(`${fixtures.url}/tab.html`);
  (await ext.popup()).close();
  await ext.click(page);
  const status = () => ext.worker().evaluate(() =>
    chrome.runtime.sendMessage({ to: 'offscreen', type: 'GetStatus' }).catch(() => null));
  const t0 = Date.now();
  const report = (label, s) => {
    const perSeg = s.remux_ms_total / Math.max(1, s.segments_sent + s.segments_waiting);
    console.log(JSON.stringify({
      at: label, phase: s.phase, low_latency: lowLatency, last_error: s.last_error, segments_sent: s.segments_sent,
      parts_sent: s.parts_sent, waiting: s.segments_waiting,
      ffmpeg_ms_per_segment: +perSeg.toFixed(1),
      ...(lowLatency ? { ffmpeg_ms_per_part: +(s.remux_ms_total / Math.max(1, s.parts_sent)).toFixed(1) } : {}),
      ffmpeg_ms_per_media_second: +(s.remux_ms_total / (s.media_ms_total / 1000)).toFixed(1),
      ack_latency_ms_avg: Math.round(s.ack_latency_ms_avg), ack_latency_ms_max: Math.round(s.ack_latency_ms_max),
      extension_process_rss_mib: +extensionRssMiB().toFixed(1),
      offscreen_js_heap_mib: +(s.js_heap_bytes / 1048576).toFixed(1),
      load_avg: readFileSync('/proc/loadavg', 'utf8').split(' ')[0],
    }));
  };
  for (let m = 1; m <= minutes; m++) {
    await sleep(t0 + m * 60_000 - Date.now());
    const s = await status();
    if (s) report(`${m} min`, s);
    else {
      const last = await ext.worker().evaluate(async () => (await chrome.storage.local.get('last_status')).last_status ?? null);
      console.log(JSON.stringify({ at: `${m} min`, broadcast_over: last }));
      break;
    }
  }
  await ext.click(page);
} finally {
  await ext.close();
  await fixtures.close();
  await server.stop();
}
