// A real toolbar click streams an animated, sounding tab into the real component in the test
// host; a second click stops it. ffmpeg/ffprobe then judge what arrived. Low latency is on (the
// default): the playlist lists parts while live, and every part boundary is judged as well as
// every segment boundary.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from './lib/server.mjs';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { launchExtension, serveFixtures, assertContinuousBroadcast, assertContinuousParts, allParts, boundaryAudio,
  decodedVideoFrames, fetchPlaylist, sleep, watchParts } from './lib/browser.mjs';

const run = promisify(execFile);

const STREAM_MS = 20_000;
let server; let fixtures; let ext;

before(async () => {
  server = await startServer({ env: { stream_retention: 0 } });
  fixtures = await serveFixtures();
  ext = await launchExtension();
  await ext.setOptions({ server: server.url, segment_seconds: 2 });
});

after(async () => {
  await ext?.close();
  await fixtures?.close();
  await server?.stop();
});

test('toolbar click streams the tab as continuous HLS with H.264 + AAC until the next click', async () => {
  const page = await ext.context.newPage();
  await page.goto(`${fixtures.url}/tab.html`);
  await ext.click(page);
  const b = await ext.until(() => ext.broadcast(), { what: 'the broadcast to start' });
  assert.match(b.stream, /^[0-9a-f]{40}$/);
  assert.equal(b.source, 'tab');
  assert.equal(b.low_latency, true, 'low latency is the default');
  const watch = watchParts(server.url, b.stream);
  await ext.until(async () => (await fetchPlaylist(server.url, b.stream))?.segments.length > 0,
    { what: 'the first segment', timeout: 30_000 });
  const first = (await fetchPlaylist(server.url, b.stream)).segments[0];

  const live = await ext.popupState();
  assert.equal(live.phase, 'live');
  assert.equal(live.link, `${server.url}/play/${b.stream}`);

  await sleep(Math.max(0, first.pdt + STREAM_MS - Date.now()));
  const before = await ext.popupState();
  assert.equal(before.phase, 'live', `still live before the second click: ${before.state} ${before.error}`);
  const stopAt = Date.now();
  await ext.click(page);
  const pl = await ext.until(async () => {
    const p = await fetchPlaylist(server.url, b.stream);
    return p?.ended && p;
  }, { what: 'EXT-X-ENDLIST', timeout: 180_000 });
  const streamedSeconds = (stopAt - first.pdt) / 1000;
  console.log('after stop:', JSON.stringify(await ext.popupState()));
  console.log(pl.text);
  const seen = await watch.stop();
  assert.ok(seen.sawPartInf, 'the live playlist has EXT-X-PART-INF');
  assert.ok(seen.parts.size > 0, 'the live playlist lists EXT-X-PART lines');
  const parts = await allParts(server.url, b.stream, pl, seen.parts);
  console.log(`${parts.length} parts in ${pl.segments.length} segments; ${seen.parts.size} seen live`);

  const done = await ext.until(async () => {
    const s = await ext.popupState();
    return s.phase === 'ended' && s;
  }, { what: 'the popup to show the end' });
  // Frames are counted, exactly: every frame the cutter placed in a segment the server holds
  // (the status's video_placed, over every segment acknowledged up to the end) is a frame
  // ffprobe decodes from the stored segments, however the capture jittered. A frame lost or
  // repeated at a boundary, or anywhere after the cutter, fails here.
  assert.equal(done.status.segments_sent, pl.segments.length, 'the status counted the segments the playlist lists');
  const decoded = await decodedVideoFrames(pl.segments.map((s) => s.uri));
  const decodedFrames = decoded.reduce((t, d) => t + d.frames, 0);
  console.log(`video frames: ${done.status.video_placed} placed by the cutter, ${decodedFrames} decoded from `
    + `${decoded.length} stored segments (${decoded.reduce((t, d) => t + d.packets, 0)} packets; per segment `
    + `${decoded.map((d) => d.frames).join(' ')}); ${done.status.video_skipped} skipped`);
  assert.ok(done.status.video_placed > 0, 'the status counts placed frames');
  for (const d of decoded) assert.equal(d.frames, d.packets, `every video packet of ${d.uri} decodes to a frame`);
  assert.equal(decodedFrames, done.status.video_placed,
    'ffprobe decodes exactly the frames the cutter placed in the acknowledged segments');
  const a = await assertContinuousBroadcast(server.url, b.stream, pl, streamedSeconds,
    { videoSkipped: done.status.video_skipped });
  assert.ok(a.meanVolume > -40, `the tone is audible (mean ${a.meanVolume} dB)`);
  // The tab plays a steady 440 Hz tone: no boundary may click or drop out (see boundaryAudio).
  const edges = await boundaryAudio(server.url, b.stream, a.audioPackets);
  console.log('audio at boundaries (step, level):', edges.map((e) => `${e.step.toFixed(2)},${e.level.toFixed(2)}`).join(' '));
  for (const [i, e] of edges.entries()) {
    assert.ok(e.step < 3, `a click at the start of seq ${i + 1}: a step ${e.step.toFixed(1)}x the tone's slope`);
    assert.ok(e.level > 0.5, `a dropout at the start of seq ${i + 1}: level ${e.level.toFixed(2)} of the stream's`);
  }
  // The same at every part boundary: video and audio timestamps, and the decoded tone.
  const ap = await assertContinuousParts(server.url, b.stream, pl, parts);
  const partEdges = await boundaryAudio(server.url, b.stream, ap.audioPackets);
  console.log('audio at part boundaries (step, level):', partEdges.map((e) => `${e.step.toFixed(2)},${e.level.toFixed(2)}`).join(' '));
  for (const [i, e] of partEdges.entries()) {
    const at = `${parts[i + 1].seq}.${parts[i + 1].part}`;
    assert.ok(e.step < 3, `a click at the start of part ${at}: a step ${e.step.toFixed(1)}x the tone's slope`);
    assert.ok(e.level > 0.5, `a dropout at the start of part ${at}: level ${e.level.toFixed(2)} of the stream's`);
  }

  // A tab is recorded with WebCodecs fed by track processors, not Chromium's MediaRecorder
  // (pipeline/src/tracks.rs says why).
  assert.equal(done.status.recorder, 'track-processors');
  assert.equal(done.status.segments_sent, pl.segments.length);
  assert.equal(done.status.parts_sent, parts.length);
  assert.equal(done.status.segments_waiting, 0);
  // 20 s of parts is more runs than one ffmpeg.wasm core does: the continuity checks above span a
  // switch of cores, and the switch took the spare loaded and warmed up ahead, not a cold load.
  assert.ok(done.status.ffmpeg_switches >= 1, `no ffmpeg.wasm core was replaced (${done.status.ffmpeg_switches})`);
  assert.equal(done.status.ffmpeg_spares_used, done.status.ffmpeg_switches, 'every switch took the warmed-up spare');
  console.log(JSON.stringify({ remux_ms_per_segment: done.status.remux_ms_total / done.status.segments_sent,
    remux_ms_per_part: done.status.remux_ms_total / done.status.parts_sent,
    remux_ms_per_media_s: done.status.remux_ms_total / (done.status.media_ms_total / 1000),
    ack_latency_ms_avg: done.status.ack_latency_ms_avg, ack_latency_ms_max: done.status.ack_latency_ms_max,
    ffmpeg_switches: done.status.ffmpeg_switches }));
});

/** Streams the fixture `name` with a toolbar click for `ms` after its first segment's start,
 *  stops it with another, and waits for the end: `{ b, first, stopAt, pl }`. */
async function streamFixture(name, ms) {
  const page = await ext.context.newPage();
  await page.goto(`${fixtures.url}/${name}`);
  await ext.click(page);
  const b = await ext.until(async () => {
    const s = await ext.broadcast();
    return s?.source === 'tab' && s.stream && s;
  }, { what: 'the broadcast to start' });
  await ext.until(async () => (await fetchPlaylist(server.url, b.stream))?.segments.length > 0,
    { what: `the first segment of ${name}`, timeout: 30_000 }).catch(async (e) => {
    console.log('no first segment; the panel says:', JSON.stringify(await ext.popupState()));
    console.log('the offscreen document said:', JSON.stringify(await ext.offscreenErrors()));
    throw e;
  });
  const first = (await fetchPlaylist(server.url, b.stream)).segments[0];
  await sleep(Math.max(0, first.pdt + ms - Date.now()));
  const stopAt = Date.now();
  await ext.click(page);
  const pl = await ext.until(async () => {
    const p = await fetchPlaylist(server.url, b.stream);
    return p?.ended && p;
  }, { what: 'EXT-X-ENDLIST', timeout: 120_000 });
  return { b, first, stopAt, pl };
}

test('a still, silent tab streams too: its last picture is encoded again, so segments keep coming', async () => {
  const { first, stopAt, pl } = await streamFixture('still.html', 8_000);
  const done = await ext.until(async () => {
    const s = await ext.popupState();
    return s.phase === 'ended' && s;
  }, { what: 'the popup to show the end' });
  const media = pl.segments.reduce((t, s) => t + s.duration, 0);
  const decoded = await decodedVideoFrames(pl.segments.map((s) => s.uri));
  const frames = decoded.reduce((t, d) => t + d.frames, 0);
  console.log(`still tab: ${pl.segments.length} segments, ${media.toFixed(2)} s, ${frames} frames `
    + `(per segment ${decoded.map((d) => d.frames).join(' ')}), streamed ${((stopAt - first.pdt) / 1000).toFixed(1)} s`);
  assert.equal(done.status.recorder, 'track-processors');
  // The 2 s segments cover the time streamed (the last one may be short) ...
  assert.ok(media >= (stopAt - first.pdt) / 1000 - 2, `the segments hold ${media.toFixed(2)} s of ${((stopAt - first.pdt) / 1000).toFixed(1)} s streamed`);
  for (const s of pl.segments.slice(0, -1)) assert.ok(s.duration <= 2.5, `seq ${s.seq} is ${s.duration} s long, the target is 2`);
  // ... and every one has pictures: at least one every 250 ms (the repeat), a keyframe first.
  for (const [i, d] of decoded.slice(0, -1).entries()) {
    assert.ok(d.frames >= 4 * pl.segments[i].duration - 1, `seq ${pl.segments[i].seq}: ${d.frames} frames in ${pl.segments[i].duration} s`);
  }
  assert.equal(frames, done.status.video_placed, 'ffprobe decodes exactly the frames the cutter placed');
});

/** The times (s, on the stream's timeline) at which `values` (ffmpeg's per-frame metadata print:
 *  `pts_time:T` then `key=value`) rise through `threshold` after staying below it. */
function onsets(print, key, threshold) {
  const out = []; let t = null; let below = false;
  for (const line of print.split('\n')) {
    const m = /pts_time:([\d.]+)/.exec(line);
    if (m) { t = Number(m[1]); continue; }
    if (!line.startsWith(`${key}=`)) continue;
    const v = Number(line.slice(key.length + 1));
    const above = Number.isFinite(v) && v > threshold;
    if (above && below) out.push(t);
    below = !above;
  }
  return out;
}

test('picture and sound stay together: each flash of the tab is heard with its beep', async () => {
  const { b } = await streamFixture('sync.html', 12_000);
  const url = `${server.url}/playlist/${b.stream}.m3u8`;
  // Both on the stored timestamps (-copyts): the picture's mean brightness per frame, and the
  // sound's level per 5 ms.
  const opts = { maxBuffer: 64 << 20 };
  const { stdout: pictures } = await run('ffmpeg', ['-nostdin', '-v', 'error', '-copyts', '-i', url, '-map', '0:v:0',
    '-vf', 'scale=64:36,signalstats,metadata=print:key=lavfi.signalstats.YAVG:file=-', '-f', 'null', '-'], opts);
  const { stdout: sound } = await run('ffmpeg', ['-nostdin', '-v', 'error', '-copyts', '-i', url, '-map', '0:a:0',
    '-af', 'asetnsamples=n=240:p=0,astats=metadata=1:reset=1,ametadata=print:key=lavfi.astats.Overall.RMS_level:file=-',
    '-f', 'null', '-'], opts);
  const flashes = onsets(pictures, 'lavfi.signalstats.YAVG', 128);
  const beeps = onsets(sound, 'lavfi.astats.Overall.RMS_level', -30);
  // Each flash with the beep nearest to it (sound after picture is positive).
  const offsets = flashes.map((f) => beeps.reduce((best, a) => (Math.abs(a - f) < Math.abs(best) ? a - f : best), Infinity));
  console.log(`sync: ${flashes.length} flashes, ${beeps.length} beeps; sound - picture (ms):`,
    offsets.map((o) => Math.round(o * 1000)).join(' '));
  assert.ok(flashes.length >= 10, `a flash a second is seen (${flashes.length} in about 12 s)`);
  assert.ok(Math.abs(beeps.length - flashes.length) <= 1, `as many beeps as flashes (${beeps.length} and ${flashes.length})`);
  // Lip sync holds within what viewers notice (ITU-R BT.1359: sound at most 45 ms early and
  // 125 ms late), and does not wander (the spread covers the picture's frame steps).
  for (const o of offsets) assert.ok(o >= -0.045 && o <= 0.125, `a beep ${Math.round(o * 1000)} ms from its flash`);
  const spread = Math.max(...offsets) - Math.min(...offsets);
  assert.ok(spread <= 0.07, `the offset wanders by ${Math.round(spread * 1000)} ms`);
});
