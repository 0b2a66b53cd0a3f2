// The popup streams the (fake) camera and microphone instead of a tab; Stop in the popup ends it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from './lib/server.mjs';
import { launchExtension, analyseStream, fetchPlaylist, sleep } from './lib/browser.mjs';

const STREAM_MS = 20_000;
let server; let ext;

before(async () => {
  server = await startServer({ env: { stream_retention: 0 } });
  ext = await launchExtension({ camera: true });
  await ext.setOptions({ server: server.url, segment_seconds: 2, default_source: 'camera' });
});

after(async () => {
  await ext?.close();
  await server?.stop();
});

test('the popup streams camera + microphone as continuous HLS and Stop ends it', async () => {
  const popup = await ext.popup();
  await popup.click('#start-camera');
  const b = await ext.until(() => ext.broadcast(), { what: 'the camera broadcast to start' });
  assert.equal(b.source, 'camera');
  await ext.until(async () => (await fetchPlaylist(server.url, b.stream))?.segments.length > 0,
    { what: 'the first segment', timeout: 30_000 });
  const first = (await fetchPlaylist(server.url, b.stream)).segments[0];
  const live = await ext.until(async () => { const s = await ext.popupState(); return s.phase === 'live' && s; },
    { what: 'the popup to show live' });
  assert.match(live.state, /camera/);
  assert.equal(live.link, `${server.url}/play/${b.stream}`);

  await sleep(Math.max(0, first.pdt + STREAM_MS - Date.now()));
  const stopAt = Date.now();
  await popup.click('#stop');
  const pl = await ext.until(async () => {
    const p = await fetchPlaylist(server.url, b.stream);
    return p?.ended && p;
  }, { what: 'EXT-X-ENDLIST', timeout: 180_000 });
  const streamedSeconds = (stopAt - first.pdt) / 1000;

  assert.doesNotMatch(pl.text, /^#EXT-X-DISCONTINUITY$/m);
  assert.deepEqual(pl.segments.map((s) => s.seq), pl.segments.map((_, i) => i));
  const a = await analyseStream(server.url, b.stream);
  console.log(JSON.stringify({ streamedSeconds, decodedSeconds: a.decodedSeconds, videoSeconds: a.videoSeconds, segments: pl.segments.length,
    frame: a.frame, meanVolume: a.meanVolume, boundaries: a.boundaries }));
  assert.ok(a.decode.ok, `ffmpeg decodes the whole playlist: ${a.decode.stderr}`);
  assert.equal(a.decode.stderr.trim(), '', 'ffmpeg reports no errors');
  assert.ok(a.streams.some((s) => s.codec_type === 'video' && s.codec_name === 'h264'), 'H.264 video');
  assert.ok(a.streams.some((s) => s.codec_type === 'audio' && s.codec_name === 'aac'), 'AAC audio');
  assert.ok(a.decodedSeconds >= 0.95 * streamedSeconds,
    `decoded ${a.decodedSeconds.toFixed(2)} s of ${streamedSeconds.toFixed(2)} s streamed`);
  // No video gap at a boundary larger than two frame durations (+1 ms: WebM timestamps are whole
  // milliseconds). The largest gap the capture itself has inside a segment is printed alongside:
  // on an overloaded machine Chromium's capturer drops frames, which no segmenter can undo.
  const frameLimit = 2 * Math.max(a.frame, 1 / 30) + 0.001;
  for (const bd of a.boundaries) {
    assert.ok(bd.videoGap <= frameLimit,
      `video gap ${bd.videoGap.toFixed(3)} s before seq ${bd.seq} (largest gap inside segments ${a.maxCaptureGap.toFixed(3)} s)`);
    assert.ok(Math.abs(bd.drift) <= 2 / 30, `seq ${bd.seq} is ${bd.drift.toFixed(3)} s off the declared timeline`);
    assert.ok(bd.audioGap <= 2 * a.audioFrame, `audio gap ${bd.audioGap.toFixed(3)} s before seq ${bd.seq}`);
  }
  // Chromium's fake microphone beeps; it must not be silence.
  assert.ok(a.meanVolume > -60, `the microphone is audible (mean ${a.meanVolume} dB)`);
});
