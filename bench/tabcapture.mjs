//! A minimal extension that records a captured tab as ours does, and nothing else
//! (bench/tabcapture/): whether Chromium's renderer keeps memory for as long as it records.
//! `node bench/tabcapture.mjs [VARIANT] [MINUTES]` (variant words: bench/tabcapture/off.js;
//! default `full`, 5 minutes). Every minute a memory-infra dump of the extension's renderer
//! (garbage collected first): its malloc's 64- and 128-byte buckets, the two that grew in the
//! soak, and what the encoders handed out (kbit/s). At the end, each bucket's growth per minute from
//! minute 2 on.

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CHROMIUM_ARGS } from './lib/viewer.mjs';
import { descendants, processes } from './lib/proc.mjs';

const EXT = join(dirname(fileURLToPath(import.meta.url)), 'tabcapture');
const variant = process.argv[2] || 'full';
const minutes = Number(process.argv[3] || 5);
const BUCKETS = { b64: 'malloc/partitions/allocator/buckets/bucket_0000064', b128: 'malloc/partitions/allocator/buckets/bucket_0000128' };

// The captured tab: a clock redrawn every 16 ms, so the capture gives frames all the time.
const page = createServer((_q, r) => {
  r.setHeader('content-type', 'text/html');
  r.end('<!doctype html><div id=c style="font:120px monospace"></div>'
    + '<script>setInterval(() => { c.textContent = performance.now().toFixed(1) }, 16)</script>');
});
await new Promise((r) => page.listen(0, '127.0.0.1', r));
const dir = mkdtempSync(join(tmpdir(), 'chalkstream-tabcapture-'));
const context = await chromium.launchPersistentContext(dir, {
  executablePath: '/usr/bin/chromium', headless: false, viewport: { width: 1280, height: 720 },
  args: [...CHROMIUM_ARGS, `--disable-extensions-except=${EXT}`, `--load-extension=${EXT}`,
    '--autoplay-policy=no-user-gesture-required', '--enable-unsafe-extension-debugging'],
});
try {
  const worker = context.serviceWorkers()[0] ?? await context.waitForEvent('serviceworker', { timeout: 30_000 });
  const id = new URL(worker.url()).host;
  const tab = await context.newPage();
  await tab.goto(`http://127.0.0.1:${page.address().port}/`);
  await tab.bringToFront();
  const cdp = await context.browser().newBrowserCDPSession();
  const { targetInfos } = await cdp.send('Target.getTargets', { filter: [{ type: 'tab' }] });
  const target = targetInfos.find((t) => t.type === 'tab' && t.url === tab.url());
  await worker.evaluate((v) => { self.__variant = v; }, variant);
  await cdp.send('Extensions.triggerAction', { id, targetId: target.targetId }); // a real toolbar click
  const browserPid = processes((a) => a.includes(`--user-data-dir=${dir}`) && !a.join(' ').includes('--type='))[0]?.pid;
  const extPids = () => new Set(descendants(browserPid).filter((p) => p.args.join(' ').includes('--extension-process')).map((p) => p.pid));

  const dump = async () => {
    const events = [];
    const onData = (e) => events.push(...e.value);
    cdp.on('Tracing.dataCollected', onData);
    const done = new Promise((r) => cdp.once('Tracing.tracingComplete', r));
    await cdp.send('Tracing.start', { transferMode: 'ReportEvents', traceConfig: { recordMode: 'recordAsMuchAsPossible',
      includedCategories: ['disabled-by-default-memory-infra'], excludedCategories: ['*'], memoryDumpConfig: { triggers: [] } } });
    await cdp.send('Tracing.requestMemoryDump', { deterministic: true, levelOfDetail: 'light' });
    await cdp.send('Tracing.end');
    await done;
    cdp.off('Tracing.dataCollected', onData);
    const pids = extPids();
    const kib = { b64: 0, b128: 0 };
    for (const ev of events) {
      const a = ev.args?.dumps?.allocators;
      if (!a || !pids.has(ev.pid)) continue;
      for (const [k, name] of Object.entries(BUCKETS)) kib[k] += parseInt(a[name]?.attrs?.size?.value ?? '0', 16) / 1024;
    }
    return kib;
  };
  const rows = [];
  const t0 = Date.now();
  for (let m = 1; m <= minutes; m++) {
    await new Promise((r) => setTimeout(r, t0 + m * 60_000 - Date.now()));
    const st = await worker.evaluate(() => chrome.runtime.sendMessage({ to: 'count' })).catch((e) => ({ error: String(e) }));
    if (st?.error) throw new Error(`the probe's recorder failed: ${st.error}`);
    const kib = await dump();
    // What the encoders handed out over the last minute (kbit/s).
    const kbps = (st.bytes - (rows.at(-1)?.bytes ?? 0)) * 8 / 60 / 1000;
    rows.push({ m, bytes: st.bytes, ...kib });
    console.log(`tabcapture ${variant} minute ${m}: ${st.slices} slices, ${kbps.toFixed(0)} kbit/s handed out, 64-byte bucket ${kib.b64.toFixed(0)} KiB, 128-byte bucket ${kib.b128.toFixed(0)} KiB`);
  }
  const from = rows.find((r) => r.m === 2) ?? rows[0];
  const to = rows.at(-1);
  const per = (k) => (to.m > from.m ? (to[k] - from[k]) / (to.m - from.m) : NaN);
  console.log(`tabcapture ${variant}: minutes ${from.m}-${to.m}, 64-byte bucket ${per('b64').toFixed(0)} KiB/min, 128-byte bucket ${per('b128').toFixed(0)} KiB/min`);
} finally {
  await context.close().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
  page.close();
}
