// The broadcast page (GET /broadcast, issue 20) in real headless Chromium with no extension:
// Chromium's fake camera and microphone, the real component in the test host, and Debian's
// ffmpeg/ffprobe as the independent client. The page shows the viewer link before going live,
// streams ~15 s that decode as H.264 + AAC covering the time streamed, plays in the player, and
// a reload (idle or live) keeps the same stream id; a live reload goes on with a discontinuity.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startServer, ROOT } from './lib/server.mjs';
import { analyseStream, decodedVideoFrames, fetchPlaylist, sleep, until } from './lib/browser.mjs';

const OUT = join(ROOT, 'tests', 'e2e', 'out');
const STREAM_MS = 15_000;
// No tab capture here, so the fake-UI flag (auto-accepted camera and microphone) is fine.
const CHROMIUM_ARGS = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'];

let server;
let browser;
let context;

before(async () => {
  mkdirSync(OUT, { recursive: true });
  [server, browser] = await Promise.all([
    startServer(),
    chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS }),
  ]);
  context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  await context.grantPermissions(['camera', 'microphone', 'clipboard-read', 'clipboard-write'], { origin: server.url });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Opens /broadcast in a new tab of the test's browser: the page, its uncaught errors, and its
 *  panel once it has loaded (its stream id shown). */
async function openPage() {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${server.url}/broadcast`);
  const loaded = await until(async () => { const p = await panel(page); return p.stream && p; }, { what: 'the page to load' });
  return { page, errors, loaded };
}

const panel = (page) => page.evaluate(() => ({
  phase: document.body.dataset.phase,
  stream: document.body.dataset.stream,
  state: document.getElementById('state').textContent,
  error: document.getElementById('error').textContent,
  link: document.getElementById('link').value,
  uptime: document.getElementById('uptime').textContent,
  health: document.getElementById('health').textContent,
  status: document.body.dataset.status ? JSON.parse(document.body.dataset.status) : null,
}));

test('the landing page links to the broadcast page', async () => {
  const page = await context.newPage();
  await page.goto(server.url);
  assert.equal(await page.getAttribute('#broadcast-link', 'href'), '/broadcast');
  await page.close();
});

test('the page streams camera + microphone to a stream that decodes, plays, and survives reloads', async () => {
  const { page, errors, loaded: idle } = await openPage();
  assert.match(idle.stream, /^[0-9a-f]{40}$/);
  assert.equal(idle.link, `${server.url}/play/${idle.stream}`, 'the viewer link is there before going live');
  assert.equal(idle.phase, 'idle');
  const secret = await page.evaluate(() => localStorage.getItem('chalkstream.session'));
  assert.ok(secret && !(await page.content()).includes(secret), 'the secret is kept, never shown');

  // A reload before going live keeps the stream.
  await page.reload();
  assert.equal((await until(async () => { const p = await panel(page); return p.stream && p; }, { what: 'reload' })).stream, idle.stream);
  const stream = idle.stream;

  await page.click('#go');
  await until(async () => (await panel(page)).phase === 'live', { what: 'the page to go live' });
  await until(async () => (await fetchPlaylist(server.url, stream))?.segments.length > 0,
    { what: 'the first segment', timeout: 60_000 });
  const first = (await fetchPlaylist(server.url, stream)).segments[0];
  await page.click('#copy');
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), `${server.url}/play/${stream}`);
  await sleep(Math.max(0, first.pdt + STREAM_MS - Date.now()));
  const live = await panel(page);
  assert.match(live.uptime, /^0:1\d$/, `uptime ${live.uptime}`);
  assert.match(live.health, /segments sent/);
  assert.equal(live.error, '');
  // The streamer sees what is streamed: the camera's picture, playing, muted.
  const preview = () => page.evaluate(() => {
    const v = document.getElementById('preview');
    return { hidden: v.hidden, muted: v.muted, width: v.videoWidth, time: v.currentTime, tracks: v.srcObject?.getTracks().length ?? 0 };
  });
  const shown = await preview();
  await sleep(500);
  const later = await preview();
  assert.ok(!shown.hidden && shown.muted && shown.width > 0 && shown.tracks === 1, `preview ${JSON.stringify(shown)}`);
  assert.ok(later.time > shown.time, `the preview plays: ${JSON.stringify([shown, later])}`);
  await page.screenshot({ path: join(OUT, 'broadcast-live.png') });
  const stopAt = Date.now();
  await page.click('#stop');
  const pl = await until(async () => { const p = await fetchPlaylist(server.url, stream); return p?.ended && p; },
    { what: 'EXT-X-ENDLIST', timeout: 120_000 });
  const streamedSeconds = (stopAt - first.pdt) / 1000;
  const ended = await until(async () => { const p = await panel(page); return p.phase === 'ended' && p; }, { what: 'the end' });
  console.log(JSON.stringify(ended.status));
  assert.deepEqual(await page.evaluate(() => { const v = document.getElementById('preview'); return [v.hidden, v.srcObject]; }),
    [true, null], 'the preview lets go of the camera once ended');
  console.log(pl.text);

  // ffprobe/ffmpeg as the independent client: the whole playlist decodes cleanly as H.264 + AAC,
  // in dense seqs with no discontinuity, covering the time streamed and no more (media time ≈
  // wall time), on one timeline. Every frame the cutter placed is a frame ffprobe decodes, so a
  // gap in the picture is the capture's own (Chromium's fake camera stalls on a busy machine,
  // most at keyframes), never the pipeline's; the extension tests hold a tab to tighter bounds.
  assert.doesNotMatch(pl.text, /^#EXT-X-DISCONTINUITY$/m, 'no discontinuity in one broadcast');
  assert.deepEqual(pl.segments.map((s) => s.seq), pl.segments.map((_, i) => i), 'dense seqs from 0');
  const a = await analyseStream(server.url, stream);
  console.log(JSON.stringify({ streamedSeconds, decodedSeconds: a.decodedSeconds, frame: a.frame, innerGaps: a.innerGaps,
    meanVolume: a.meanVolume, boundaries: a.boundaries }));
  assert.ok(a.decode.ok && a.decode.stderr.trim() === '', `ffmpeg decodes the playlist cleanly: ${a.decode.stderr}`);
  assert.ok(a.streams.some((s) => s.codec_type === 'video' && s.codec_name === 'h264'), 'H.264 video');
  assert.ok(a.streams.some((s) => s.codec_type === 'audio' && s.codec_name === 'aac'), 'AAC audio');
  assert.ok(a.meanVolume > -60, `the fake microphone is audible (mean ${a.meanVolume} dB)`);
  assert.ok(a.decodedSeconds >= 0.95 * streamedSeconds && a.decodedSeconds <= streamedSeconds + 1,
    `decoded ${a.decodedSeconds.toFixed(2)} s for ${streamedSeconds.toFixed(2)} s of wall time`);
  assert.ok(a.minVideoStep > 0, 'video timestamps strictly increase');
  for (const bd of a.boundaries) {
    assert.ok(Math.abs(bd.drift) <= 2 / 30, `seq ${bd.seq} is ${bd.drift.toFixed(3)} s off the declared timeline`);
    assert.ok(bd.audioGap <= 2 * a.audioFrame, `audio gap ${bd.audioGap.toFixed(3)} s before seq ${bd.seq}`);
  }
  const decoded = await decodedVideoFrames(pl.segments.map((s) => s.uri));
  assert.equal(ended.status.video_skipped, 0, 'the cutter placed every frame it was given');
  assert.equal(decoded.reduce((t, d) => t + d.frames, 0), ended.status.video_placed,
    'ffprobe decodes exactly the frames the cutter placed');
  const last = pl.segments.at(-1);
  assert.ok(Math.abs(last.pdt + last.duration * 1000 - stopAt) < 3000, 'the capture times follow the wall clock');
  assert.equal(ended.status.segments_sent, pl.segments.length);

  // It plays in the player page.
  const viewer = await context.newPage();
  await viewer.goto(`${server.url}/play/${stream}`);
  await viewer.waitForFunction(() => window.chalkstreamPlayer?.video.currentTime > 1, null, { timeout: 30_000 });
  await viewer.close();

  // Live again under the same stream, then a reload while live: it goes on by itself, after
  // what the server holds, with a discontinuity.
  await page.click('#go');
  await until(async () => (await panel(page)).phase === 'live', { what: 'live again' });
  const before = pl.segments.length;
  await until(async () => (await fetchPlaylist(server.url, stream))?.segments.length > before + 1,
    { what: 'segments after going live again', timeout: 60_000 });
  await page.reload();
  const resumed = await until(async () => { const p = await panel(page); return p.phase === 'live' && p; },
    { what: 'the reloaded page to go live by itself', timeout: 60_000 });
  assert.equal(resumed.stream, stream, 'a reload keeps the stream id');
  const count = (await fetchPlaylist(server.url, stream)).segments.length;
  await until(async () => (await fetchPlaylist(server.url, stream))?.segments.length > count + 1,
    { what: 'segments after the reload', timeout: 60_000 });
  await page.click('#stop');
  const after = await until(async () => { const p = await fetchPlaylist(server.url, stream); return p?.ended && p; },
    { what: 'EXT-X-ENDLIST after the reload', timeout: 120_000 });
  const seqs = after.segments.map((s) => s.seq);
  assert.deepEqual(seqs, seqs.map((_, i) => i), 'seqs stay dense across the reload');
  assert.equal((after.text.match(/^#EXT-X-DISCONTINUITY$/gm) ?? []).length, 2, 'one discontinuity per restart');
  assert.deepEqual(errors, [], 'no uncaught errors on the page');
  await page.close();
});

test('a screen or window is shared instead of the camera, with its sound, and a reload asks to share it again', async () => {
  // Chromium's fake UI picks its fake screen (1280x720) and fake sound for getDisplayMedia.
  const { page, errors, loaded: kept } = await openPage();
  await page.click('summary');
  await page.click('#new');
  const { stream } = await until(async () => { const p = await panel(page); return p.stream !== kept.stream && p; },
    { what: 'a new stream' });
  assert.ok(await page.isVisible('#share'), 'desktop Chromium offers screen sharing');
  await page.click('#share');
  const live = await until(async () => { const p = await panel(page); return p.phase === 'live' && p; }, { what: 'the share to go live' });
  assert.equal(live.state, 'Live: sharing your screen');
  assert.equal(live.status.source, 'screen');
  assert.equal(await page.evaluate(() => localStorage.getItem('chalkstream.live')), 'screen');
  await until(async () => (await fetchPlaylist(server.url, stream))?.segments.length >= 3, { what: 'three segments', timeout: 60_000 });
  const first = (await fetchPlaylist(server.url, stream)).segments[0];
  const stopAt = Date.now();
  await page.click('#stop');
  const pl = await until(async () => { const p = await fetchPlaylist(server.url, stream); return p?.ended && p; },
    { what: 'EXT-X-ENDLIST', timeout: 120_000 });
  const a = await analyseStream(server.url, stream);
  const streamedSeconds = (stopAt - first.pdt) / 1000;
  console.log(JSON.stringify({ streamedSeconds, decodedSeconds: a.decodedSeconds, meanVolume: a.meanVolume, segments: pl.segments.length }));
  assert.ok(a.decode.ok && a.decode.stderr.trim() === '', `ffmpeg decodes the shared screen cleanly: ${a.decode.stderr}`);
  assert.ok(a.streams.some((s) => s.codec_type === 'video' && s.codec_name === 'h264'), 'H.264 video');
  assert.ok(a.streams.some((s) => s.codec_type === 'audio' && s.codec_name === 'aac'), 'the shared sound, as AAC');
  assert.ok(a.meanVolume > -60, `the shared sound is not silence: ${a.meanVolume} dB`);
  assert.ok(Math.abs(a.decodedSeconds - streamedSeconds) < 2.5, `media time ≈ wall time: ${a.decodedSeconds} s of ${streamedSeconds} s`);

  // A reload while sharing cannot reopen the sharing dialog by itself (only a click may): the page
  // keeps the stream and asks for the share again instead of going live with something else.
  await page.evaluate(() => localStorage.setItem('chalkstream.live', 'screen'));
  await page.reload();
  const after = await until(async () => { const p = await panel(page); return p.stream && p; }, { what: 'reload' });
  assert.equal(after.stream, stream);
  assert.equal(after.phase, 'idle', 'not live with the camera instead');
  assert.match(after.error, /reload ended your screen share\. Choose Share a screen or window/);
  assert.equal(await page.evaluate(() => localStorage.getItem('chalkstream.live')), null);
  assert.deepEqual(errors, [], 'no uncaught errors on the page');
  await page.close();
});

test('New stream gives another stream id, and a refused token is said plainly', async () => {
  const tokenServer = await startServer({ env: { ingest_token: 'right-token' } });
  try {
    const page = await context.newPage();
    await page.goto(`${tokenServer.url}/broadcast`);
    const a = await until(async () => { const p = await panel(page); return p.stream && p; }, { what: 'load' });
    await page.click('summary');
    await page.click('#new');
    const b = await until(async () => { const p = await panel(page); return p.stream !== a.stream && p; }, { what: 'a new stream' });
    assert.equal(b.link, `${tokenServer.url}/play/${b.stream}`);
    await page.fill('#token', 'wrong-token');
    await page.click('#go');
    const failed = await until(async () => { const p = await panel(page); return p.phase === 'failed' && p; },
      { what: 'the refusal', timeout: 60_000 });
    assert.match(failed.error, /refused the ingest token \(401\) — check the ingest token below/);
    assert.doesNotMatch(failed.error, /wrong-token/);
    await page.reload();
    const kept = await until(async () => { const p = await panel(page); return p.stream && p; }, { what: 'reload' });
    assert.equal(kept.phase, 'idle', 'a refused broadcast does not restart itself on reload');
    assert.equal(await page.inputValue('#token'), 'wrong-token', 'the token is kept locally');
    await page.close();
  } finally {
    await tokenServer.stop();
  }
});
