// The broadcast page in Firefox ESR over WebDriver BiDi (issue 20). Firefox's MediaRecorder
// makes VP8 only, and the pipeline cuts H.264 + Opus WebM, so the page must say so plainly at
// once, still give the viewer link, and never start. What Firefox offers instead is measured
// and printed (WebCodecs H.264 is the way in: see ARCHITECTURE.md, "The broadcast page").
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from './lib/server.mjs';
import { launchFirefox } from './lib/firefox.mjs';
import { sleep } from './lib/browser.mjs';

let server;
let firefox;

before(async () => {
  [server, firefox] = await Promise.all([startServer(), launchFirefox()]);
});

after(async () => {
  await firefox?.close();
  await server?.stop();
});

test('in Firefox the page gives the link and says plainly it cannot broadcast from this browser', async () => {
  await firefox.navigate(`${server.url}/broadcast`);
  let panel;
  for (let i = 0; i < 120; i++) {
    panel = await firefox.evaluate(`({
      stream: document.body.dataset.stream, unsupported: document.body.dataset.unsupported,
      link: document.getElementById('link').value, error: document.getElementById('error').textContent,
      go: document.getElementById('go').disabled, phase: document.body.dataset.phase })`);
    if (panel.stream) break;
    await sleep(250);
  }
  assert.match(panel.stream ?? '', /^[0-9a-f]{40}$/, `the page ran in Firefox ${firefox.version}`);
  assert.equal(panel.link, `${server.url}/play/${panel.stream}`);
  assert.equal(panel.unsupported, '1');
  assert.equal(panel.go, true, 'Go live is disabled');
  assert.match(panel.error, /cannot record H\.264 video.*Chrome, Edge/);
  assert.equal(panel.phase, 'idle');

  // What Firefox offers, for the way in (printed; the premise asserted).
  const offered = await firefox.evaluate(`(async () => {
    const recorder = Object.fromEntries(['video/webm;codecs=avc1.42E01E,opus', 'video/webm;codecs=vp8,opus',
      'video/webm;codecs=vp9,opus'].map((t) => [t, MediaRecorder.isTypeSupported(t)]));
    const video = typeof VideoEncoder === 'undefined' ? null : (await VideoEncoder.isConfigSupported({
      codec: 'avc1.42E01E', width: 1280, height: 720, bitrate: 2500000, framerate: 30 })).supported;
    const audio = typeof AudioEncoder === 'undefined' ? null : (await AudioEncoder.isConfigSupported({
      codec: 'opus', sampleRate: 48000, numberOfChannels: 1, bitrate: 128000 })).supported;
    return { recorder, webcodecs_avc1: video, webcodecs_opus: audio,
      track_processor: typeof MediaStreamTrackProcessor !== 'undefined' };
  })()`);
  console.log(`Firefox ${firefox.version}: ${JSON.stringify(offered)}`);
  assert.equal(offered.recorder['video/webm;codecs=avc1.42E01E,opus'], false,
    'Firefox records H.264 now: the page could broadcast from it as from Chromium');
});
