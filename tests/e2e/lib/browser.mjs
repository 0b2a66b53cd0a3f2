// Debian Chromium with the Chalkstream extension loaded, and the checks the extension tests
// make on what it streamed (ffmpeg/ffprobe as an independent client).
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { execFile } from 'node:child_process';
import { createServer } from 'node:http';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ROOT } from './server.mjs';

export const EXT_DIR = join(ROOT, 'extension', 'dist');
export const FIXTURES = join(ROOT, 'tests', 'e2e', 'fixtures');
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Calls `f` every `every` ms until it returns something truthy, and returns that; throws
 *  "timed out waiting for {what}" after `timeout` ms. */
export async function until(f, { what, timeout = 30_000, every = 250 }) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(every);
  }
}
const run = promisify(execFile);

const BASE_ARGS = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--autoplay-policy=no-user-gesture-required', '--enable-unsafe-extension-debugging',
  '--disable-features=DisableLoadExtensionCommandLineSwitch'];

/**
 * Launch Chromium with extension/dist loaded. `camera: true` adds the fake camera and
 * auto-accepted permission prompts (that flag breaks tab capture, so tab tests leave it off);
 * `args` adds Chromium switches (e.g. fake devices whose permission a test grants over CDP).
 * Resolves to `{ context, id, worker(), click(page), popup(), setOptions(), close() }`.
 */
export async function launchExtension({ camera = false, args: extra = [] } = {}) {
  if (!existsSync(join(EXT_DIR, 'manifest.json'))) throw new Error('extension/dist is missing: sh extension/build.sh');
  const dir = mkdtempSync(join(tmpdir(), 'chalkstream-chromium-'));
  const args = [...BASE_ARGS, `--disable-extensions-except=${EXT_DIR}`, `--load-extension=${EXT_DIR}`];
  if (camera) args.push('--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream');
  args.push(...extra);
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: '/usr/bin/chromium', headless: false, args,
    viewport: { width: 1280, height: 720 },
    ignoreDefaultArgs: ['--disable-extensions', '--disable-component-extensions-with-background-pages'],
  });
  const close = async () => { await context.close().catch(() => {}); rmSync(dir, { recursive: true, force: true }); };
  try {
    const sw = context.serviceWorkers().find((w) => w.url().startsWith('chrome-extension://'))
      ?? await context.waitForEvent('serviceworker', { timeout: 30_000 });
    const id = new URL(sw.url()).host;
    const browserSession = await context.browser().newBrowserCDPSession();
    let popupPage = null;
    const ext = {
      context, id,
      /** The extension's current service worker (a new one after a restart). */
      worker: () => context.serviceWorkers().find((w) => w.url().startsWith(`chrome-extension://${id}/`)),
      /** A real toolbar click on `page`'s tab (CDP Extensions.triggerAction). */
      async click(page) {
        await page.bringToFront();
        // The action wants the *tab* target, the parent of the page target.
        const { targetInfos } = await browserSession.send('Target.getTargets', { filter: [{ type: 'tab' }] });
        const tabs = targetInfos.filter((t) => t.type === 'tab' && t.url === page.url());
        if (tabs.length !== 1) throw new Error(`expected one tab at ${page.url()}, found ${tabs.length}`);
        await browserSession.send('Extensions.triggerAction', { id, targetId: tabs[0].targetId });
      },
      /** The popup page, opened as a tab (created on first use). */
      async popup() {
        if (!popupPage || popupPage.isClosed()) {
          popupPage = await context.newPage();
          await popupPage.goto(`chrome-extension://${id}/popup.html`);
        }
        return popupPage;
      },
      /** What the popup shows: state line, error line and the status record. */
      async popupState() {
        const p = await ext.popup();
        return p.evaluate(() => ({
          phase: document.body.dataset.phase,
          state: document.getElementById('state').textContent,
          error: document.getElementById('error').textContent,
          link: document.getElementById('link').value,
          waiting: document.getElementById('waiting').textContent,
          status: document.body.dataset.status ? JSON.parse(document.body.dataset.status) : null,
        }));
      },
      /** Stores options as the options page does. */
      async setOptions(options) {
        const p = await ext.popup();
        await p.evaluate((o) => chrome.storage.local.set({ options: o }),
          { server: 'http://127.0.0.1:3000', token: '', segment_seconds: 2, default_source: 'tab', ...options });
      },
      /** The running broadcast record from chrome.storage (has the secret; tests only). */
      async broadcast() {
        const p = await ext.popup();
        return p.evaluate(async () => (await chrome.storage.local.get('broadcast')).broadcast ?? null);
      },
      /** Poll `fn` until it returns a truthy value. */
      async until(fn, { timeout = 30_000, what = 'condition' } = {}) {
        const end = Date.now() + timeout;
        for (;;) {
          const v = await fn();
          if (v) return v;
          if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
          await sleep(250);
        }
      },
      /** The offscreen document's console errors and uncaught exceptions so far (the newest 50),
       *  for a test to print when the broadcast did not do what it should. */
      async offscreenErrors() {
        return offscreenLog.slice(-50);
      },
      browserSession,
      close,
    };
    // Follows the offscreen document (each one the extension creates) over the DevTools protocol.
    const offscreenLog = [];
    const watched = new Set();
    browserSession.on('Target.receivedMessageFromTarget', ({ message }) => {
      const m = JSON.parse(message);
      if (m.method === 'Runtime.exceptionThrown') {
        const d = m.params.exceptionDetails;
        offscreenLog.push(`exception: ${d.exception?.description ?? d.text}`);
      } else if (m.method === 'Runtime.consoleAPICalled' && ['error', 'warning', 'assert'].includes(m.params.type)) {
        offscreenLog.push(`${m.params.type}: ${m.params.args.map((a) => a.value ?? a.description ?? '').join(' ')}`);
      }
    });
    const watch = async ({ targetInfo: t }) => {
      if (!t.url.startsWith(`chrome-extension://${id}/offscreen.html`) || watched.has(t.targetId)) return;
      watched.add(t.targetId);
      try {
        const { sessionId } = await browserSession.send('Target.attachToTarget', { targetId: t.targetId });
        await browserSession.send('Target.sendMessageToTarget',
          { sessionId, message: JSON.stringify({ id: 1, method: 'Runtime.enable' }) });
      } catch { /* gone already */ }
    };
    browserSession.on('Target.targetCreated', watch);
    browserSession.on('Target.targetInfoChanged', watch);
    await browserSession.send('Target.setDiscoverTargets', { discover: true });
    return ext;
  } catch (e) {
    await close();
    throw e;
  }
}

/** Serves tests/e2e/fixtures on a free loopback port; resolves to `{ url, close() }`. */
export async function serveFixtures() {
  const server = createServer((req, res) => {
    const name = new URL(req.url, 'http://x').pathname.replace(/^\/+/, '') || 'tab.html';
    if (!/^[\w.-]+$/.test(name) || !existsSync(join(FIXTURES, name))) { res.writeHead(404).end(); return; }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(readFileSync(join(FIXTURES, name)));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((r) => server.close(r)) };
}

/** Parses a media playlist into `{ text, segments: [{ seq, uri, duration, pdt }], ended }`. */
export async function fetchPlaylist(server, stream) {
  const res = await fetch(`${server}/playlist/${stream}.m3u8`);
  if (res.status !== 200) return null;
  const text = await res.text();
  const lines = text.split('\n');
  const media = Number((text.match(/#EXT-X-MEDIA-SEQUENCE:(\d+)/) ?? [0, 0])[1]);
  const segments = [];
  let duration = null; let pdt = null;
  for (const line of lines) {
    if (line.startsWith('#EXTINF:')) duration = parseFloat(line.slice(8));
    else if (line.startsWith('#EXT-X-PROGRAM-DATE-TIME:')) pdt = Date.parse(line.slice(25));
    else if (line && !line.startsWith('#')) {
      segments.push({ seq: media + segments.length, uri: new URL(line, `${server}/playlist/`).href, duration, pdt });
      duration = null; pdt = null;
    }
  }
  return { text, segments, ended: text.includes('#EXT-X-ENDLIST') };
}

async function ffprobeJson(args) {
  const { stdout } = await run('ffprobe', ['-v', 'error', '-of', 'json', ...args], { maxBuffer: 256 << 20 });
  return JSON.parse(stdout);
}

/**
 * The packets of one MPEG-TS file at `url`, by stream type: sorted presentation times, packet
 * durations, and whether the first video packet (in file order) is a keyframe.
 */
async function probeTimes(url) {
  const dir = mkdtempSync(join(tmpdir(), 'chalkstream-segs-'));
  try {
    const file = join(dir, 'piece.ts');
    writeFileSync(file, Buffer.from(await (await fetch(url)).arrayBuffer()));
    const { packets, streams: ss } = await ffprobeJson(['-show_entries',
      'packet=stream_index,pts_time,duration_time,flags:stream=index,codec_type', file]);
    const kind = Object.fromEntries(ss.map((s) => [s.index, s.codec_type]));
    const times = { video: [], audio: [] };
    const durs = { video: [], audio: [] };
    let firstVideoKey = null;
    for (const p of packets) {
      const k = kind[p.stream_index];
      if (!times[k] || p.pts_time === undefined) continue;
      if (k === 'video' && firstVideoKey === null) firstVideoKey = String(p.flags ?? '').startsWith('K');
      times[k].push(Number(p.pts_time));
      if (p.duration_time !== undefined) durs[k].push(Number(p.duration_time));
    }
    for (const k of ['video', 'audio']) times[k].sort((a, b) => a - b);
    return { times, durs, firstVideoKey };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The LL-HLS parts a live playlist lists: `[{ seq, part, duration, independent, uri }]`. */
export function playlistParts(server, text) {
  const parts = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('#EXT-X-PART:')) continue;
    const attrs = Object.fromEntries([...line.slice(12).matchAll(/([A-Z-]+)=("[^"]*"|[^,]*)/g)]
      .map(([, k, v]) => [k, v.replace(/^"|"$/g, '')]));
    const m = attrs.URI.match(/(\d+)\.(\d+)\.ts$/);
    parts.push({ seq: Number(m[1]), part: Number(m[2]), duration: Number(attrs.DURATION),
      independent: attrs.INDEPENDENT === 'YES', uri: new URL(attrs.URI, `${server}/playlist/`).href });
  }
  return parts;
}

/**
 * Polls a live playlist every `everyMs` until `stop()` is called; resolves to `{ sawPartInf,
 * parts: Map("seq.part" -> part) }` with every part any reload listed.
 */
export function watchParts(server, stream, { everyMs = 500 } = {}) {
  const seen = new Map();
  let sawPartInf = false; let running = true;
  const done = (async () => {
    while (running) {
      const pl = await fetchPlaylist(server, stream).catch(() => null);
      if (pl && !pl.ended) {
        sawPartInf ||= /^#EXT-X-PART-INF:PART-TARGET=/m.test(pl.text);
        for (const p of playlistParts(server, pl.text)) seen.set(`${p.seq}.${p.part}`, p);
      }
      await sleep(everyMs);
    }
    return { sawPartInf, parts: seen };
  })();
  return { stop: () => { running = false; return done; } };
}

/**
 * Every part of every segment of a finished v2 stream, in order: the parts `seen` while live
 * (with their declared durations), and for a segment whose seen parts do not add up to its
 * EXTINF, the rest found by fetching `/chunks/{stream}/{seq}.{n}.ts` until one is missing
 * (duration unknown: null).
 */
export async function allParts(server, stream, playlist, seen) {
  const out = [];
  for (const seg of playlist.segments) {
    const mine = [...seen.values()].filter((p) => p.seq === seg.seq).sort((a, b) => a.part - b.part);
    mine.forEach((p, i) => assert.equal(p.part, i, `parts of seq ${seg.seq} are listed from 0 without a hole`));
    const sum = mine.reduce((t, p) => t + p.duration, 0);
    if (Math.abs(sum - seg.duration) > 0.0005) {
      for (let n = mine.length; n < 64; n++) {
        const uri = `${server}/chunks/${stream}/${seg.seq}.${n}.ts`;
        const res = await fetch(uri);
        await res.arrayBuffer();
        if (res.status !== 200) break;
        mine.push({ seq: seg.seq, part: n, duration: null, independent: null, uri });
      }
    }
    out.push(...mine);
  }
  return out;
}

/**
 * What the issue asks at every part boundary, as assertContinuousBroadcast asks at segment
 * boundaries: each segment is exactly its parts' bytes, every independent part (and part 0)
 * starts with a keyframe, audio has no gap between consecutive parts, and video is cut exactly:
 * each part's first frame is at its declared start and timestamps strictly increase. Returns
 * the audio packets per part (for boundaryAudio).
 */
export async function assertContinuousParts(server, stream, playlist, parts) {
  for (const seg of playlist.segments) {
    const mine = parts.filter((p) => p.seq === seg.seq);
    assert.ok(mine.length > 0, `seq ${seg.seq} has parts`);
    const whole = Buffer.from(await (await fetch(seg.uri)).arrayBuffer());
    const pieces = await Promise.all(mine.map(async (p) => Buffer.from(await (await fetch(p.uri)).arrayBuffer())));
    assert.ok(whole.equals(Buffer.concat(pieces)), `seq ${seg.seq} is its ${mine.length} parts' bytes in order`);
  }
  const probed = [];
  for (const p of parts) probed.push({ ...p, ...await probeTimes(p.uri) });
  const allVideo = probed.flatMap((p) => p.times.video);
  const diffs = allVideo.slice(1).map((t, i) => t - allVideo[i]).filter((d) => d > 0);
  const frame = [...diffs].sort((x, y) => x - y)[Math.floor(diffs.length / 2)];
  const audioFrame = 1024 / 48000;
  // Parts are cut at frames: the gap before a part inside a segment is the capture's own
  // interval between two consecutive frames (the segment checks above judge those), so what the
  // cutter must get right is exactness: every part's first frame sits exactly (to the ms WebM
  // gives) at its declared start on the declared timeline, and timestamps strictly increase
  // across the boundary, so no frame is lost, repeated or put into the wrong part.
  const innerGap = (t) => Math.max(0, ...t.slice(1).map((x, i) => x - t[i]));
  const captureGap = Math.max(0, ...probed.map((p) => innerGap(p.times.video)));
  let declared = 0; let known = true;
  const rows = [];
  for (const [i, p] of probed.entries()) {
    if (p.part === 0 || p.independent) assert.equal(p.firstVideoKey, true, `part ${p.seq}.${p.part} starts with a keyframe`);
    if (i > 0) {
      const a = probed[i - 1];
      const aEnd = a.times.video.at(-1); const bStart = p.times.video[0];
      const audioEnd = a.times.audio.at(-1) + audioFrame;
      const row = { at: `${p.seq}.${p.part}`, videoGap: bStart - aEnd, audioGap: p.times.audio[0] - audioEnd,
        drift: known ? (bStart - probed[0].times.video[0]) - declared : null };
      rows.push(row);
      if (aEnd !== undefined && bStart !== undefined) {
        assert.ok(row.videoGap > 0, `video timestamps increase across part ${row.at} (gap ${row.videoGap.toFixed(3)} s)`);
        if (row.drift !== null) {
          assert.ok(Math.abs(row.drift) <= 0.0015, `part ${row.at} starts ${row.drift.toFixed(4)} s off its declared start`);
        }
      }
      assert.ok(Math.abs(row.audioGap) <= 2 * audioFrame, `audio gap ${row.audioGap.toFixed(4)} s before part ${row.at}`);
    }
    if (p.duration === null) known = false;
    declared += p.duration ?? 0;
  }
  console.log(`largest capture gap inside parts ${captureGap.toFixed(3)} s;`, 'part boundaries (part: video gap, audio gap, drift):', rows.map((r) =>
    `${r.at}:${r.videoGap.toFixed(3)},${r.audioGap.toFixed(4)},${r.drift === null ? '-' : r.drift.toFixed(3)}`).join(' '));
  const overTwoFrames = rows.filter((r) => r.videoGap > 2 * Math.max(frame, 1 / 30) + 0.001).length;
  console.log(`${overTwoFrames} of ${rows.length} part boundaries have a video gap over two frames (the capture's own)`);
  return { audioPackets: probed.map((p) => p.times.audio.length), frame };
}

/**
 * Everything the tests check about a finished stream, measured with Debian's ffmpeg/ffprobe:
 * ffmpeg's complaints while decoding the whole playlist, codecs, decoded duration, the largest
 * timestamp gap at each segment boundary, and the audio's mean volume.
 */
/**
 * How the decoded audio of a stream of a steady tone behaves at each segment boundary, within
 * 25 ms either side: `step`, the largest step between consecutive samples divided by the 99.9th
 * percentile of steps over the whole stream (about the tone's own steepest slope), and `level`,
 * the lowest RMS of a 5 ms window divided by the stream's RMS. A boundary that drops or repeats
 * audio clicks (step several times 1); one that plays an encoder's priming frame or a hole
 * drops out (level near 0).
 */
export async function boundaryAudio(server, stream, audioPackets) {
  const url = `${server}/playlist/${stream}.m3u8`;
  const { stdout } = await run('ffmpeg', ['-nostdin', '-v', 'error', '-i', url, '-map', '0:a:0', '-ac', '1', '-ar', '48000',
    '-f', 'f32le', '-'], { encoding: 'buffer', maxBuffer: 256 << 20 });
  const x = new Float32Array(stdout.buffer, stdout.byteOffset, Math.floor(stdout.length / 4));
  const steps = new Float32Array(x.length - 1);
  for (let i = 1; i < x.length; i++) steps[i - 1] = Math.abs(x[i] - x[i - 1]);
  const typical = Float32Array.from(steps).sort()[Math.floor(steps.length * 0.999)];
  const rms = (from, to) => { let e = 0; for (let i = from; i < to; i++) e += x[i] * x[i]; return Math.sqrt(e / Math.max(1, to - from)); };
  const overall = rms(0, x.length);
  // Decoded samples are concatenated whatever the timestamps say: boundary k sits after the
  // 1024 samples of every AAC packet of the segments before it.
  return audioPackets.slice(0, -1).map((_, k) => {
    const at = 1024 * audioPackets.slice(0, k + 1).reduce((a, b) => a + b, 0);
    const [from, to] = [Math.max(0, at - 1200), Math.min(steps.length, at + 1200)];
    let step = 0;
    for (let i = from; i < to; i++) step = Math.max(step, steps[i]);
    let level = Infinity;
    for (let i = from; i + 240 <= to; i += 48) level = Math.min(level, rms(i, i + 240));
    return { step: step / typical, level: level / overall };
  });
}

export async function analyseStream(server, stream) {
  const pl = await fetchPlaylist(server, stream);
  const url = `${server}/playlist/${stream}.m3u8`;
  // Decoded frames keep the source's 90 kHz time base: with the default (a frame rate guessed
  // from the first frames), a capture whose frame rate varies, e.g. a camera slowed by a busy
  // machine, puts two distinct frames in one output tick and ffmpeg's null muxer complains
  // about its own rounding. Strictly increasing source timestamps are asserted separately.
  const decode = await run('ffmpeg', ['-nostdin', '-v', 'error', '-i', url, '-enc_time_base', '-1', '-f', 'null', '-'],
    { maxBuffer: 64 << 20 }).then((r) => ({ ok: true, stderr: r.stderr }), (e) => ({ ok: false, stderr: String(e.stderr ?? e) }));
  const streams = (await ffprobeJson(['-show_entries', 'stream=codec_name,codec_type', url])).streams;
  const vol = await run('ffmpeg', ['-nostdin', '-i', url, '-map', '0:a:0', '-af', 'volumedetect', '-f', 'null', '-'],
    { maxBuffer: 64 << 20 }).then((r) => r.stderr, (e) => String(e.stderr ?? ''));
  const meanVolume = Number((vol.match(/mean_volume: (-?[\d.]+) dB/) ?? [0, NaN])[1]);

  // Per segment: first/last packet times per stream type (timestamps are absolute: -copyts).
  const perSegment = [];
  for (const seg of pl.segments) perSegment.push({ seq: seg.seq, ...await probeTimes(seg.uri) });
  const audioFrame = 1024 / 48000;
  const innerGap = (t) => Math.max(0, ...t.slice(1).map((x, i) => x - t[i]));
  const median = (a) => { const s = [...a].sort((x, y) => x - y); return s.length ? s[Math.floor(s.length / 2)] : NaN; };
  const allVideo = perSegment.flatMap((s) => s.times.video);
  const diffs = allVideo.slice(1).map((t, i) => t - allVideo[i]).filter((d) => d > 0);
  const frame = median(diffs);
  const boundaries = [];
  for (let i = 1; i < perSegment.length; i++) {
    const a = perSegment[i - 1]; const b = perSegment[i];
    const aEnd = a.times.video.at(-1); const bStart = b.times.video[0];
    const audioEnd = a.times.audio.at(-1) + (median(a.durs.audio) || 0.021333);
    // The timeline the playlist declares (sum of EXTINF) against the media's own timestamps.
    const declared = pl.segments.slice(0, i).reduce((t, s) => t + s.duration, 0);
    boundaries.push({ seq: b.seq, videoGap: bStart - aEnd, audioGap: b.times.audio[0] - audioEnd,
      capturedGap: Math.max(innerGap(a.times.video), innerGap(b.times.video)),
      drift: (bStart - perSegment[0].times.video[0]) - declared });
  }
  const innerGaps = perSegment.map((s) => innerGap(s.times.video));
  // Smallest step between consecutive video timestamps over the whole stream (<= 0: a repeat).
  const minVideoStep = Math.min(...allVideo.slice(1).map((t, i) => t - allVideo[i]));
  // What ffmpeg decodes: from the first packet of either stream to the end of the last one.
  const allAudio = perSegment.flatMap((s) => s.times.audio);
  const starts = [allVideo[0], allAudio[0]].filter((t) => t !== undefined);
  const ends = [allVideo.length ? allVideo.at(-1) + frame : undefined,
    allAudio.length ? allAudio.at(-1) + audioFrame : undefined].filter((t) => t !== undefined);
  const decodedSeconds = starts.length ? Math.max(...ends) - Math.min(...starts) : 0;
  const videoSeconds = allVideo.length ? allVideo.at(-1) - allVideo[0] + frame : 0;
  return {
    playlist: pl, decode, streams, meanVolume, frame, audioFrame, boundaries, decodedSeconds,
    videoPackets: allVideo.length, innerGaps, videoSeconds, maxCaptureGap: Math.max(0, ...innerGaps), minVideoStep,
    audioPackets: perSegment.map((s) => s.times.audio.length),
  };
}

/**
 * What the issue asks of every finished broadcast, asserted in one place: no discontinuity, dense
 * seqs from 0, a clean ffmpeg decode, H.264 + AAC, at least 95% of the streamed time decoded, and
 * continuous timestamps at every segment boundary. Returns the analysis for further checks.
 */
export async function assertContinuousBroadcast(server, stream, playlist, streamedSeconds, { videoSkipped } = {}) {
  const pl = playlist;
  assert.doesNotMatch(pl.text, /^#EXT-X-DISCONTINUITY$/m, 'no discontinuity in a clean broadcast');
  assert.deepEqual(pl.segments.map((s) => s.seq), pl.segments.map((_, i) => i), 'dense seqs from 0');
  const a = await analyseStream(server, stream);
  console.log(JSON.stringify({ streamedSeconds, decodedSeconds: a.decodedSeconds, videoSeconds: a.videoSeconds, segments: pl.segments.length,
    frame: a.frame, innerGaps: a.innerGaps, meanVolume: a.meanVolume, boundaries: a.boundaries }, null, 1));
  assert.ok(a.decode.ok, `ffmpeg decodes the whole playlist: ${a.decode.stderr}`);
  assert.equal(a.decode.stderr.trim(), '', 'ffmpeg reports no errors');
  assert.ok(a.minVideoStep > 0, `video timestamps strictly increase across the stream (smallest step ${a.minVideoStep})`);
  assert.ok(a.streams.some((s) => s.codec_type === 'video' && s.codec_name === 'h264'), 'H.264 video');
  assert.ok(a.streams.some((s) => s.codec_type === 'audio' && s.codec_name === 'aac'), 'AAC audio');
  assert.ok(a.decodedSeconds >= 0.95 * streamedSeconds,
    `decoded ${a.decodedSeconds.toFixed(2)} s of ${streamedSeconds.toFixed(2)} s streamed`);
  // No video gap at a boundary larger than two frame durations (+1 ms: WebM timestamps are whole
  // milliseconds). On an overloaded machine Chromium's capturer drops frames, which no segmenter
  // can undo: when the extension reports that its cutter placed every frame it was given
  // (`videoSkipped` 0), a boundary gap may also be as large as a gap the capture itself left
  // inside one of the two segments around it, or one frame more than the largest it left inside
  // any segment (a boundary is a keyframe, where the capturer drops most: CI once saw 0.100 s
  // there against 0.088 s inside).
  const frameLimit = 2 * Math.max(a.frame, 1 / 30) + 0.001;
  if (videoSkipped !== undefined) assert.equal(videoSkipped, 0, 'the cutter placed every frame it was given');
  for (const bd of a.boundaries) {
    const captured = Math.max(bd.capturedGap, a.maxCaptureGap + Math.max(a.frame, 1 / 30));
    const limit = videoSkipped === 0 ? Math.max(frameLimit, captured + 0.001) : frameLimit;
    assert.ok(bd.videoGap <= limit,
      `video gap ${bd.videoGap.toFixed(3)} s before seq ${bd.seq} (largest gap inside the segments around it `
      + `${bd.capturedGap.toFixed(3)} s, inside any ${a.maxCaptureGap.toFixed(3)} s)`);
    assert.ok(Math.abs(bd.drift) <= 2 / 30, `seq ${bd.seq} is ${bd.drift.toFixed(3)} s off the declared timeline`);
    assert.ok(bd.audioGap <= 2 * a.audioFrame, `audio gap ${bd.audioGap.toFixed(3)} s before seq ${bd.seq}`);
  }
  return a;
}

/**
 * The video frames ffprobe decodes from each of `urls` (MPEG-TS segments, each starting with a
 * keyframe), fetched and probed one by one: `[{ uri, frames, packets }]`. `frames` is what the
 * decoder output (`nb_read_frames`), `packets` what the demuxer read (`nb_read_packets`).
 */
export async function decodedVideoFrames(urls) {
  const dir = mkdtempSync(join(tmpdir(), 'chalkstream-frames-'));
  try {
    const out = [];
    for (const [i, uri] of urls.entries()) {
      const file = join(dir, `${i}.ts`);
      const res = await fetch(uri);
      assert.equal(res.status, 200, `${uri} is stored`);
      writeFileSync(file, Buffer.from(await res.arrayBuffer()));
      // JSON, not csv: an MPEG-TS file also lists its streams under its program.
      const { streams } = await ffprobeJson(['-select_streams', 'v:0', '-count_frames', '-count_packets',
        '-show_entries', 'stream=nb_read_frames,nb_read_packets', file]);
      out.push({ uri, frames: Number(streams[0]?.nb_read_frames ?? 0), packets: Number(streams[0]?.nb_read_packets ?? 0) });
    }
    return out;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
