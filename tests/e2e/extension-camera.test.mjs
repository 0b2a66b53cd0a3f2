// The popup streams the (fake) camera and microphone instead of a tab; Stop in the popup ends it.
// Low latency is off here, so this is also the test of whole-segment uploads (wire contract v1).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from './lib/server.mjs';
import { launchExtension, assertContinuousBroadcast, fetchPlaylist, sleep } from './lib/browser.mjs';

const STREAM_MS = 20_000;
let server; let ext;

before(async () => {
  server = await startServer({ env: { stream_retention: 0 } });
  ext = await launchExtension({ camera: true });
  await ext.setOptions({ server: server.url, segment_seconds: 2, default_source: 'camera', low_latency: false });
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
  const livePlaylist = await fetchPlaylist(server.url, b.stream);
  assert.doesNotMatch(livePlaylist.text, /#EXT-X-PART/, 'low latency off: whole segments only');
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

  const a = await assertContinuousBroadcast(server.url, b.stream, pl, streamedSeconds);
  // Chromium's fake microphone beeps; it must not be silence.
  assert.ok(a.meanVolume > -60, `the microphone is audible (mean ${a.meanVolume} dB)`);
  const done = await ext.until(async () => { const s = await ext.popupState(); return s.phase === 'ended' && s; },
    { what: 'the popup to show the end' });
  assert.equal(done.status.segments_sent, pl.segments.length);
  assert.equal(done.status.parts_sent, 0, 'no parts with low latency off');
});
