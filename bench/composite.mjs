// What compositing the camera into a corner of a 1280x720 30 fps picture costs per frame, two
// ways, against recording the picture alone (all three encode with MediaRecorder, H.264 at
// 2.5 Mbit/s, as the extension does):
//   canvas: <video> elements + a 2D <canvas> drawn on every new tab frame + canvas.captureStream()
//   frames: MediaStreamTrackProcessor VideoFrames drawn on an OffscreenCanvas, new VideoFrames
//           written to a MediaStreamTrackGenerator (what pipeline/src/compositing.rs does)
// Sources are Chromium's fake camera (1280x720, or the height given, for the "tab"; 640x480
// for the camera). `bitmap` is `frames` with the output made from transferToImageBitmap(). CPU is
// the whole browser's (every Chromium process, from /proc), so work off the main thread (frame
// readback, captureStream copies, the encoder) counts too. Usage: node bench/composite.mjs [seconds] [rounds] [height]
import { readFileSync, readdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const SECONDS = Number(process.argv[2] ?? 15);
const ROUNDS = Number(process.argv[3] ?? 2);
const HEIGHT = Number(process.argv[4] ?? 720);
const TICK = 100; // USER_HZ

/** CPU time (ms) of the Chromium started with `dir` and all its descendants. */
function chromiumCpuMs(dir) {
  const procs = new Map();
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
      procs.set(pid, { ppid: f[1], ticks: Number(f[11]) + Number(f[12]),
        root: readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir) });
    } catch { /* gone */ }
  }
  const inTree = (pid, depth = 0) => {
    const p = procs.get(pid);
    if (!p || depth > 10) return false;
    return p.root || inTree(p.ppid, depth + 1);
  };
  let ticks = 0;
  for (const [pid, p] of procs) if (inTree(pid)) ticks += p.ticks;
  return ticks * 1000 / TICK;
}

const PAGE = `<!doctype html><meta charset="utf-8"><body style="margin:0"><script>
const MIME = 'video/webm;codecs=avc1.42E01E,opus';
const H = Number(new URLSearchParams(location.search).get('h') ?? 720), W = H * 16 / 9;
const rect = { w: W / 4, h: W / 4 * 3 / 4, x: W - W / 4 - H / 40, y: H - W / 4 * 3 / 4 - H / 40 };
let tab, cam;
async function open() {
  tab = await navigator.mediaDevices.getUserMedia({ video: { width: W, height: H, frameRate: 30 } });
  cam = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480, frameRate: 30 } });
}
function record(track) {
  const rec = new MediaRecorder(new MediaStream([track]), { mimeType: MIME, videoBitsPerSecond: 2500000 });
  let bytes = 0; rec.ondataavailable = (e) => { bytes += e.data.size; };
  rec.start(250);
  return { stop: () => new Promise((r) => { rec.onstop = () => r(bytes); rec.stop(); }) };
}
const stats = { frames: 0, busy: [] };
function costs() { const b = [...stats.busy].sort((a, b) => a - b);
  return { frames: stats.frames, p50: b[Math.floor(b.length / 2)] ?? 0, p95: b[Math.floor(b.length * 0.95)] ?? 0,
    mean: b.reduce((a, x) => a + x, 0) / Math.max(1, b.length) }; }
const modes = {
  none() { const r = record(tab.getVideoTracks()[0]);
    // Count the source's frames for per-frame numbers.
    const v = document.createElement('video'); v.muted = true; v.srcObject = tab; v.play();
    let on = true; const f = () => { if (!on) return; stats.frames++; v.requestVideoFrameCallback(f); }; v.requestVideoFrameCallback(f);
    return async () => { on = false; v.srcObject = null; return r.stop(); }; },
  canvas() {
    const vt = document.createElement('video'); vt.muted = true; vt.srcObject = tab; vt.play();
    const vc = document.createElement('video'); vc.muted = true; vc.srcObject = cam; vc.play();
    const c = document.createElement('canvas'); c.width = W; c.height = H; document.body.append(c);
    const g = c.getContext('2d', { alpha: false });
    const r = record(c.captureStream(30).getVideoTracks()[0]);
    let on = true;
    const draw = () => { if (!on) return; const t = performance.now();
      g.drawImage(vt, 0, 0, W, H); g.drawImage(vc, rect.x, rect.y, rect.w, rect.h);
      stats.busy.push(performance.now() - t); stats.frames++; vt.requestVideoFrameCallback(draw); };
    vt.requestVideoFrameCallback(draw);
    return async () => { on = false; const b = await r.stop(); c.remove(); vt.srcObject = null; vc.srcObject = null; return b; };
  },
  frames() {
    const gen = new MediaStreamTrackGenerator({ kind: 'video' });
    const writer = gen.writable.getWriter();
    const canvas = new OffscreenCanvas(W, H);
    const g = canvas.getContext('2d', { alpha: false });
    const r = record(gen);
    const small = new OffscreenCanvas(rect.w, rect.h); const gs = small.getContext('2d', { alpha: false });
    let on = true; let hasCam = false;
    // As pipeline/src/compositing.rs: frames go back at once (a held frame starves the capturer).
    const pump = async (track, side) => {
      const reader = new MediaStreamTrackProcessor({ track, maxBufferSize: 1 }).readable.getReader();
      while (on) {
        const { value, done } = await reader.read(); if (done) break;
        const t = performance.now();
        if (side === 'cam') { gs.drawImage(value, 0, 0, rect.w, rect.h); value.close(); hasCam = true; continue; }
        g.drawImage(value, 0, 0, W, H); value.close();
        if (hasCam) g.drawImage(small, rect.x, rect.y, rect.w, rect.h);
        const out = new VideoFrame(canvas, { timestamp: Math.round(t * 1000) });
        stats.busy.push(performance.now() - t); stats.frames++;
        await writer.write(out); out.close();
      }
      reader.cancel();
    };
    pump(tab.getVideoTracks()[0].clone(), 'tab').catch((e) => console.log('tab pump: ' + e));
    pump(cam.getVideoTracks()[0].clone(), 'cam').catch((e) => console.log('cam pump: ' + e));
    return async () => { on = false; const b = await r.stop(); gen.stop(); return b; };
  },
  bitmap() {
    const gen = new MediaStreamTrackGenerator({ kind: 'video' });
    const writer = gen.writable.getWriter();
    const canvas = new OffscreenCanvas(W, H);
    const g = canvas.getContext('2d', { alpha: false });
    const r = record(gen);
    const small = new OffscreenCanvas(rect.w, rect.h); const gs = small.getContext('2d', { alpha: false });
    let on = true; let hasCam = false;
    // As pipeline/src/compositing.rs: frames go back at once (a held frame starves the capturer).
    const pump = async (track, side) => {
      const reader = new MediaStreamTrackProcessor({ track, maxBufferSize: 1 }).readable.getReader();
      while (on) {
        const { value, done } = await reader.read(); if (done) break;
        const t = performance.now();
        if (side === 'cam') { gs.drawImage(value, 0, 0, rect.w, rect.h); value.close(); hasCam = true; continue; }
        g.drawImage(value, 0, 0, W, H); value.close();
        if (hasCam) g.drawImage(small, rect.x, rect.y, rect.w, rect.h);
        const out = new VideoFrame(canvas.transferToImageBitmap(), { timestamp: Math.round(t * 1000) });
        stats.busy.push(performance.now() - t); stats.frames++;
        await writer.write(out); out.close();
      }
      reader.cancel();
    };
    pump(tab.getVideoTracks()[0].clone(), 'tab').catch((e) => console.log('tab pump: ' + e));
    pump(cam.getVideoTracks()[0].clone(), 'cam').catch((e) => console.log('cam pump: ' + e));
    return async () => { on = false; const b = await r.stop(); gen.stop(); return b; };
  },
};
let stopper = null;
window.bench = {
  open,
  start(mode) { stats.frames = 0; stats.busy = []; stopper = modes[mode](); },
  async stop() { const bytes = await stopper(); return { ...costs(), bytes }; },
};
</script>`;

const server = createServer((_, res) => res.writeHead(200, { 'content-type': 'text/html' }).end(PAGE));
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const dir = mkdtempSync(join(tmpdir(), 'chalkstream-composite-'));
const context = await chromium.launchPersistentContext(dir, {
  executablePath: '/usr/bin/chromium', headless: false,
  args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--use-fake-device-for-media-stream',
    '--use-fake-ui-for-media-stream', '--autoplay-policy=no-user-gesture-required'],
});
try {
  const page = await context.newPage();
  page.on('console', (m) => console.log('page:', m.text()));
  await page.goto(`http://127.0.0.1:${server.address().port}/?h=${HEIGHT}`);
  await page.evaluate(() => window.bench.open());
  const results = { none: [], canvas: [], frames: [], bitmap: [] };
  for (let round = 0; round < ROUNDS; round++) {
    for (const mode of ['none', 'canvas', 'frames', 'bitmap']) {
      await page.evaluate((m) => window.bench.start(m), mode);
      await new Promise((r) => setTimeout(r, 2000)); // settle
      const cpu0 = chromiumCpuMs(dir); const t0 = Date.now();
      const f0 = await page.evaluate(() => 0);
      await new Promise((r) => setTimeout(r, SECONDS * 1000));
      const cpu1 = chromiumCpuMs(dir); const t1 = Date.now();
      const r = await page.evaluate(() => window.bench.stop());
      void f0;
      const seconds = (t1 - t0) / 1000;
      const row = { mode, round, cpuPerSecondMs: (cpu1 - cpu0) / seconds,
        fps: r.frames / (seconds + 2), mainThreadMsP50: r.p50, mainThreadMsP95: r.p95, mainThreadMsMean: r.mean, mbit: r.bytes * 8 / (seconds + 2) / 1e6 };
      results[mode].push(row);
      console.log(JSON.stringify(row));
    }
  }
  const mean = (a, k) => a.reduce((s, x) => s + x[k], 0) / a.length;
  const base = mean(results.none, 'cpuPerSecondMs');
  for (const mode of ['canvas', 'frames', 'bitmap']) {
    const cpu = mean(results[mode], 'cpuPerSecondMs'); const fps = mean(results[mode], 'fps');
    console.log(`${mode}: ${cpu.toFixed(0)} ms CPU/s vs ${base.toFixed(0)} without compositing -> ` +
      `${((cpu - base) / fps).toFixed(2)} ms CPU per composited frame at ${fps.toFixed(1)} fps; ` +
      `main thread ${mean(results[mode], 'mainThreadMsMean').toFixed(2)} ms/frame (p95 ${mean(results[mode], 'mainThreadMsP95').toFixed(2)})`);
  }
} finally {
  await context.close();
  rmSync(dir, { recursive: true, force: true });
  server.close();
}
