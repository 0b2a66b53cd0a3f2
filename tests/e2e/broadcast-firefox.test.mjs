// The broadcast page in Firefox ESR over WebDriver BiDi (issue 20). Firefox's MediaRecorder
// makes VP8 only, so the page's pipeline records there through WebCodecs: H.264 from
// `VideoEncoder` (`avc1`), Opus from an audio-only MediaRecorder, written as the WebM the
// segmenter reads (pipeline/src/encode.rs, webm.rs). What Firefox offers is measured and
// printed; the stream is decoded by ffmpeg/ffprobe and played in Firefox's own player page.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startServer } from './lib/server.mjs';
import { launchFirefox } from './lib/firefox.mjs';
import { analyseStream, decodedVideoFrames, fetchPlaylist, sleep, until } from './lib/browser.mjs';

const STREAM_MS = 15_000;
const run = promisify(execFile);
let server;
let firefox;

before(async () => {
  [server, firefox] = await Promise.all([startServer(), launchFirefox()]);
});

after(async () => {
  await firefox?.close();
  await server?.stop();
});

const panel = () => firefox.evaluate(`({
  stream: document.body.dataset.stream, phase: document.body.dataset.phase,
  link: document.getElementById('link').value, error: document.getElementById('error').textContent,
  status: document.body.dataset.status ? JSON.parse(document.body.dataset.status) : null })`);

test('Firefox streams camera + microphone from the page as H.264 + AAC through WebCodecs', async () => {
  await firefox.navigate(`${server.url}/broadcast`);
  const idle = await until(async () => { const p = await panel(); return p.stream && p; }, { what: 'the page to run' });
  assert.equal(idle.link, `${server.url}/play/${idle.stream}`);
  assert.equal(idle.error, '', 'Firefox can broadcast: no "cannot record" message');

  // What Firefox offers (printed: which way its H.264 comes).
  const offered = await firefox.evaluate(`(async () => {
    const recorder = Object.fromEntries(['video/webm;codecs=avc1.42E01E,opus', 'video/webm;codecs=vp8,opus',
      'audio/webm;codecs=opus'].map((t) => [t, MediaRecorder.isTypeSupported(t)]));
    const video = typeof VideoEncoder === 'undefined' ? null : (await VideoEncoder.isConfigSupported({
      codec: 'avc1.42E01E', width: 1280, height: 720, bitrate: 2500000, framerate: 30 })).supported;
    return { recorder, webcodecs_avc1: video, track_processor: typeof MediaStreamTrackProcessor !== 'undefined' };
  })()`);
  console.log(`Firefox ${firefox.version}: ${JSON.stringify(offered)}`);
  assert.equal(offered.recorder['video/webm;codecs=avc1.42E01E,opus'], false,
    'Firefox records H.264 WebM itself now: the WebCodecs path is no longer needed there');
  assert.equal(offered.webcodecs_avc1, true, 'WebCodecs encodes H.264');

  await firefox.evaluate(`document.getElementById('go').click()`);
  const stream = idle.stream;
  await until(async () => (await panel()).phase === 'live', { what: 'Firefox to go live', timeout: 60_000 });
  await until(async () => (await fetchPlaylist(server.url, stream))?.segments.length > 0,
    { what: 'the first segment', timeout: 60_000 });
  const first = (await fetchPlaylist(server.url, stream)).segments[0];
  await sleep(Math.max(0, first.pdt + STREAM_MS - Date.now()));
  const live = await panel();
  assert.equal(live.phase, 'live', `still live: ${live.error}`);
  const stopAt = Date.now();
  await firefox.evaluate(`document.getElementById('stop').click()`);
  const pl = await until(async () => { const p = await fetchPlaylist(server.url, stream); return p?.ended && p; },
    { what: 'EXT-X-ENDLIST', timeout: 120_000 });
  const ended = await until(async () => { const p = await panel(); return p.phase === 'ended' && p; }, { what: 'the end' });
  const streamedSeconds = (stopAt - first.pdt) / 1000;

  const a = await analyseStream(server.url, stream);
  const decoded = await decodedVideoFrames(pl.segments.map((s) => s.uri));
  const frames = decoded.reduce((t, d) => t + d.frames, 0);
  console.log(JSON.stringify({ streamedSeconds, decodedSeconds: a.decodedSeconds, frames, placed: ended.status.video_placed,
    skipped: ended.status.video_skipped, meanVolume: a.meanVolume, ackLatencyMs: ended.status.ack_latency_ms_avg,
    remuxMsPerMediaS: ended.status.remux_ms_total / (ended.status.media_ms_total / 1000) }));
  assert.deepEqual(pl.segments.map((s) => s.seq), pl.segments.map((_, i) => i), 'dense seqs from 0');
  assert.ok(a.streams.some((s) => s.codec_type === 'video' && s.codec_name === 'h264'), 'H.264 video');
  assert.ok(a.streams.some((s) => s.codec_type === 'audio' && s.codec_name === 'aac'), 'AAC audio');
  assert.ok(a.decode.ok && a.decode.stderr.trim() === '', `ffmpeg decodes the playlist cleanly: ${a.decode.stderr}`);
  assert.ok(a.meanVolume > -60, `Firefox's fake microphone is audible (mean ${a.meanVolume} dB)`);
  assert.ok(a.decodedSeconds >= 0.9 * streamedSeconds && a.decodedSeconds <= streamedSeconds + 1.5,
    `decoded ${a.decodedSeconds.toFixed(2)} s for ${streamedSeconds.toFixed(2)} s of wall time`);
  assert.equal(frames, ended.status.video_placed, 'ffprobe decodes exactly the frames the cutter placed');

  // It plays in the player page, in Firefox (hls.js).
  await firefox.navigate(`${server.url}/play/${stream}`);
  await until(async () => (await firefox.evaluate('window.chalkstreamPlayer?.video.currentTime ?? 0')) > 1,
    { what: 'Firefox to play the recording', timeout: 30_000 });
});

test('Firefox offers screen sharing, and with no screen to share says so plainly and keeps the stream', async () => {
  // Headless Firefox has no screen: getDisplayMedia answers NotFoundError, which the page must
  // put in words (not a stack, not a silent failure) while the stream and its link stay put.
  await firefox.navigate(`${server.url}/broadcast`);
  const idle = await until(async () => { const p = await panel(); return p.stream && p; }, { what: 'the page to run' });
  assert.equal(await firefox.evaluate(`!document.getElementById('share').hidden`), true, 'Firefox has getDisplayMedia');
  await firefox.evaluate(`document.getElementById('share').click()`);
  const failed = await until(async () => { const p = await panel(); return p.phase === 'failed' && p; },
    { what: 'the refusal', timeout: 30_000 });
  assert.equal(failed.error, 'This browser has no screen or window to share.');
  assert.equal(failed.stream, idle.stream);
  assert.equal(await firefox.evaluate(`localStorage.getItem('chalkstream.live')`), null, 'a reload will not retry it by itself');
});

test('a lower preset chosen under Settings is kept and streamed: Firefox at 480p', async () => {
  // What the page tells a streamer whose computer cannot keep up to choose; WebCodecs encodes at
  // the camera's size, which the page asks for at the preset's.
  await firefox.navigate(`${server.url}/broadcast`);
  await until(async () => (await panel()).stream, { what: 'the page to run' });
  await firefox.evaluate(`(() => { document.getElementById('new').click(); const q = document.getElementById('quality');
    q.value = '480p'; q.dispatchEvent(new Event('change')); return true; })()`);
  await firefox.navigate(`${server.url}/broadcast`);
  const { stream } = await until(async () => { const p = await panel(); return p.stream && p; }, { what: 'reload' });
  assert.equal(await firefox.evaluate(`document.getElementById('quality').value`), '480p', 'the choice is kept across a reload');
  await firefox.evaluate(`document.getElementById('go').click()`);
  const live = await until(async () => { const p = await panel(); return p.phase === 'live' && p.status?.quality && p; },
    { what: 'live at 480p', timeout: 60_000 });
  assert.equal(live.status.quality, '480p');
  await until(async () => (await fetchPlaylist(server.url, stream))?.segments.length >= 2, { what: 'two segments', timeout: 60_000 });
  await firefox.evaluate(`document.getElementById('stop').click()`);
  const pl = await until(async () => { const p = await fetchPlaylist(server.url, stream); return p?.ended && p; },
    { what: 'EXT-X-ENDLIST', timeout: 120_000 });
  const { stdout } = await run('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'stream=width,height',
    '-of', 'csv=p=0', pl.segments[0].uri]);
  const [width, height] = stdout.trim().split('\n')[0].split(',').map(Number);
  console.log(JSON.stringify({ width, height, segments: pl.segments.length }));
  assert.equal(height, 480, `the picture is 480 lines high (${width}x${height})`);
  assert.ok(width <= 854, `and no wider than 854 (${width})`);
});
