// The streamer's side (issue 9): the link on the clipboard after the toolbar click, the
// right-click menu, the microphone mixed into the tab's sound, the camera in a corner of the
// tab's picture, and the 1080p preset. Real Chromium and real clicks; the fake microphone plays a
// 1 kHz tone and the fake camera shows solid magenta (files made here with ffmpeg), and their
// permission is granted over the DevTools protocol (`Browser.grantPermissions`), because the
// fake-UI flag that other tests use breaks tab capture. ffmpeg decodes what arrived.
//
// Chromium offers no DevTools command to open the toolbar button's context menu, so entries are
// driven through the extension's own `contextMenus.onClicked` handler (the function the
// listener calls, `chalkstreamMenuClicked` in the worker); that entries exist is checked with
// `chrome.contextMenus.update(id, {})`, which fails for an id the menu does not hold.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startServer } from './lib/server.mjs';
import { launchExtension, serveFixtures, fetchPlaylist, sleep } from './lib/browser.mjs';

const run = promisify(execFile);
const TAB_HZ = 440; // tests/e2e/fixtures/tab.html
const MIC_HZ = 1000;
const STREAM_MS = 10_000;
let server; let fixtures; let ext; let media;

before(async () => {
  media = mkdtempSync(join(tmpdir(), 'chalkstream-fake-media-'));
  await run('ffmpeg', ['-v', 'error', '-y', '-f', 'lavfi', '-i', `sine=frequency=${MIC_HZ}:sample_rate=48000:duration=10`,
    '-ac', '1', '-c:a', 'pcm_s16le', join(media, 'mic.wav')]);
  await run('ffmpeg', ['-v', 'error', '-y', '-f', 'lavfi', '-i', 'color=c=magenta:s=320x240:r=30:d=1',
    '-pix_fmt', 'yuv420p', join(media, 'camera.y4m')]);
  server = await startServer({ env: { stream_retention: 0 } });
  fixtures = await serveFixtures();
  ext = await launchExtension({ args: ['--use-fake-device-for-media-stream',
    `--use-file-for-fake-audio-capture=${join(media, 'mic.wav')}`,
    `--use-file-for-fake-video-capture=${join(media, 'camera.y4m')}`] });
  for (const origin of [`chrome-extension://${ext.id}`, fixtures.url]) {
    await ext.browserSession.send('Browser.grantPermissions', { origin,
      permissions: ['audioCapture', 'videoCapture', 'clipboardReadWrite', 'clipboardSanitizedWrite'] });
  }
});

after(async () => {
  await ext?.close();
  await fixtures?.close();
  await server?.stop();
  if (media) rmSync(media, { recursive: true, force: true });
});

/** Which of `ids` the toolbar button's menu holds. */
const menuHas = (ids) => ext.worker().evaluate(async (ids) => {
  const has = {};
  for (const id of ids) has[id] = await chrome.contextMenus.update(id, {}).then(() => true, () => false);
  return has;
}, ids);
const LIVE = ['copy-link', 'open-panel', 'stop'];
const IDLE = ['stream-tab', 'stream-camera', 'open-panel'];
const ALL = [...new Set([...LIVE, ...IDLE])];
const expectMenu = (live) => ext.until(async () => {
  const has = await menuHas(ALL);
  const want = live ? LIVE : IDLE;
  return ALL.every((id) => has[id] === want.includes(id)) && has;
}, { what: `the ${live ? 'live' : 'idle'} menu` });

/** Clicks a menu entry the way Chrome's listener would, for the tab `page` shows. */
async function menu(id, page) {
  const tabId = page ? await ext.worker().evaluate(async (url) => (await chrome.tabs.query({ url }))[0]?.id, page.url()) : undefined;
  await ext.worker().evaluate(({ id, tabId }) => globalThis.chalkstreamMenuClicked({ menuItemId: id }, tabId ? { id: tabId } : undefined),
    { id, tabId });
}

async function clipboard(page) {
  await page.bringToFront();
  return page.evaluate(() => navigator.clipboard.readText());
}

const ended = (stream) => ext.until(async () => { const p = await fetchPlaylist(server.url, stream); return p?.ended && p; },
  { what: 'EXT-X-ENDLIST', timeout: 120_000 });

/** Power of `hz` in `x` (Goertzel), relative to the signal's. */
function tonePower(x, hz, rate = 48000) {
  const w = 2 * Math.PI * hz / rate; const c = 2 * Math.cos(w);
  let s1 = 0; let s2 = 0; let e = 0;
  for (let i = 0; i < x.length; i++) { const s0 = x[i] + c * s1 - s2; s2 = s1; s1 = s0; e += x[i] * x[i]; }
  return (s1 * s1 + s2 * s2 - c * s1 * s2) / (x.length * e / 2 || 1);
}

/**
 * Where the sound drops out: 20 ms windows quieter than a tenth of the median window, between
 * the first and the last audible one (`gaps`: [start s, length ms]), and how long the sound is
 * silent at each end (`lead`, `tail`, s). A steady tone has none: each gap is sound lost.
 */
function dropouts(x, rate = 48000) {
  const win = rate / 50; const n = Math.floor(x.length / win); const rms = [];
  for (let w = 0; w < n; w++) {
    let e = 0;
    for (let i = w * win; i < (w + 1) * win; i++) e += x[i] * x[i];
    rms.push(Math.sqrt(e / win));
  }
  const median = [...rms].sort((a, b) => a - b)[Math.floor(n / 2)];
  const loud = rms.map((r) => r > median / 10);
  const first = loud.indexOf(true); const last = loud.lastIndexOf(true);
  const gaps = []; let start = null;
  for (let w = first; w <= last; w++) {
    if (!loud[w] && start === null) start = w;
    if (loud[w] && start !== null) { gaps.push([start * 0.02, (w - start) * 20]); start = null; }
  }
  return { lead: first * 0.02, tail: (n - 1 - last) * 0.02, gaps };
}

test('one click: live at 1080p with the mic mixed in and the camera in the corner, the link on the clipboard; the menu copies, opens the panel and stops', { timeout: 170_000 }, async () => {
  await ext.setOptions({ server: server.url, segment_seconds: 2, quality: '1080p', mic: true,
    overlay: { on: true, corner: 'bottom-right', size: 'medium' } });
  const page = await ext.context.newPage();
  await page.goto(`${fixtures.url}/tab.html`);
  await page.evaluate(() => navigator.clipboard.writeText('before'));
  await expectMenu(false);

  await ext.click(page);
  const b = await ext.until(() => ext.broadcast(), { what: 'the broadcast to start' });
  const link = `${server.url}/play/${b.stream}`;
  assert.equal(await ext.until(async () => { const t = await clipboard(page); return t === link && t; },
    { what: 'the viewer link on the clipboard' }), link);
  assert.ok(!(await clipboard(page)).includes(b.session), 'the secret is not in the link');
  // The worker says so once the offscreen document reports the copy: a notification (Chrome
  // keeps no readable copy of its text) and the button's title, which names the link.
  await ext.until(async () => (await ext.worker().evaluate(() => chrome.notifications.getAll())).chalkstream,
    { what: 'the notification' });
  const title = await ext.until(async () => {
    const t = await ext.worker().evaluate(() => chrome.action.getTitle({}));
    return t.includes('(link copied)') && t;
  }, { what: 'the title to say the link was copied' });
  assert.ok(title.includes(`live at ${link} (link copied)`), title);
  await expectMenu(true);

  const popup = await ext.popup();
  const live = await ext.until(async () => { const s = await ext.popupState(); return s.phase === 'live' && s; },
    { what: 'the panel to show live' });
  assert.equal(live.status.quality, '1080p');
  assert.equal(live.status.mic, 'on', `the microphone is mixed in (${live.status.notice})`);
  assert.equal(live.status.mixing, true, 'the panel can take the microphone out and put it back');
  assert.equal(live.status.overlay, true, `the camera is in the corner (${live.status.notice})`);
  // The composed picture (the camera drawn in) and the mix are encoded by WebCodecs at 1080p's level.
  assert.equal(live.status.recorder, 'track-processors');
  assert.equal(live.status.notice, null);
  assert.match(live.state, /this tab with your camera in the corner, 1080p/);
  await sleep(3000);
  console.log('live:', JSON.stringify((await ext.popupState()).status));
  // Mute and unmute in the panel.
  await popup.click('#mute');
  await ext.until(async () => (await ext.popupState()).status.mic === 'muted', { what: 'muted' });
  await popup.click('#mute');
  await ext.until(async () => (await ext.popupState()).status.mic === 'on', { what: 'unmuted' });

  // The menu copies the link again and opens the panel in one step.
  await page.evaluate(() => navigator.clipboard.writeText('something else'));
  await menu('copy-link');
  await ext.until(async () => (await clipboard(page)) === link, { what: 'the menu to copy the link' });
  const opened = ext.context.waitForEvent('page', { predicate: (p) => p.url().endsWith('/popup.html') });
  await menu('open-panel');
  await (await opened).close();

  await ext.until(async () => (await fetchPlaylist(server.url, b.stream))?.segments.length > 0,
    { what: 'the first segment', timeout: 60_000 });
  const first = (await fetchPlaylist(server.url, b.stream)).segments[0];
  await sleep(Math.max(0, first.pdt + STREAM_MS - Date.now()));
  await menu('stop');
  const pl = await ended(b.stream);
  await expectMenu(false);
  const done = await ext.until(async () => { const s = await ext.popupState(); return s.phase === 'ended' && s; },
    { what: 'the panel to show the end' });
  console.log('after stop:', JSON.stringify(done.status));

  // 1080p: every segment is 1920x1080.
  const url = `${server.url}/playlist/${b.stream}.m3u8`;
  for (const seg of pl.segments) {
    const { stdout } = await run('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'stream=width,height',
      '-of', 'json', seg.uri]);
    const [v] = JSON.parse(stdout).streams;
    assert.equal(`${v.width}x${v.height}`, '1920x1080', `segment ${seg.seq} is 1920x1080`);
  }
  const { stdout: frames } = await run('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-count_packets',
    '-show_entries', 'stream=nb_read_packets', '-of', 'json', url]);
  const media = pl.segments.reduce((t, s) => t + s.duration, 0);
  console.log(`composited 1080p: ${(JSON.parse(frames).streams[0].nb_read_packets / media).toFixed(1)} fps over ${media.toFixed(1)} s`);

  // The sound holds the tab's tone and the microphone's.
  const { stdout: pcm } = await run('ffmpeg', ['-nostdin', '-v', 'error', '-i', url, '-map', '0:a:0', '-ac', '1', '-ar', '48000',
    '-f', 'f32le', '-'], { encoding: 'buffer', maxBuffer: 256 << 20 });
  const x = new Float32Array(pcm.buffer, pcm.byteOffset, Math.floor(pcm.length / 4));
  const power = Object.fromEntries([TAB_HZ, MIC_HZ, 700, 1500, 2500].map((hz) => [hz, tonePower(x, hz)]));
  console.log('share of the audio power at each frequency:', JSON.stringify(power));
  // Chrome's noise suppression (on for the microphone, as it should be for a voice) holds a
  // steady tone some 20 dB down; it still stands far above every other frequency.
  for (const hz of [TAB_HZ, MIC_HZ]) {
    for (const off of [700, 1500, 2500]) {
      assert.ok(power[hz] > 1000 * power[off], `${hz} Hz stands out (${power[hz]} vs ${power[off]} at ${off} Hz)`);
    }
    assert.ok(power[hz] > 1e-4, `${hz} Hz carries a real share of the sound (${power[hz]})`);
  }
  // The tab's tone plays throughout: no sound frame lost while the camera is composed in. (Read
  // on the offscreen document's main thread, three in four were: over 40 gaps of 20–300 ms and
  // the last 3 s silent, while the shares above could still pass.)
  const drops = dropouts(x);
  console.log('sound:', JSON.stringify({ lead: drops.lead, tail: drops.tail, gaps: drops.gaps.length }));
  assert.deepEqual(drops.gaps, [], 'the sound never drops out');
  assert.ok(drops.tail <= 0.1, `the sound lasts to the end (silent for the last ${drops.tail.toFixed(2)} s)`);
  // It may start a little after the picture: the sound worker starts with the recording.
  assert.ok(drops.lead <= 0.5, `the sound starts with the picture (silent for the first ${drops.lead.toFixed(2)} s)`);

  // The picture: the camera (magenta) in the bottom-right corner, the tab everywhere else. A
  // frame from the last segment, scaled to 192x108 (one pixel per 10x10).
  const last = pl.segments.at(-1);
  const { stdout: rgb } = await run('ffmpeg', ['-nostdin', '-v', 'error', '-i', last.uri, '-frames:v', '1',
    '-vf', 'scale=192:108', '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-'], { encoding: 'buffer', maxBuffer: 1 << 20 });
  const mean = (x0, y0, x1, y1) => {
    const m = [0, 0, 0]; let n = 0;
    for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) { for (let c = 0; c < 3; c++) m[c] += rgb[(y * 192 + x) * 3 + c]; n++; }
    return m.map((v) => Math.round(v / n));
  };
  const magenta = ([r, g, b]) => r > 180 && b > 180 && g < 90;
  // Medium overlay of a 4:3 camera at 1920x1080: 480x360 at (1413, 693).
  const corner = mean(146, 73, 186, 102);
  assert.ok(magenta(corner), `the bottom-right corner shows the camera: rgb ${corner}`);
  for (const [name, area] of [['top left', [0, 0, 96, 54]], ['top right', [96, 0, 192, 54]], ['bottom left', [0, 54, 96, 108]],
    ['left of the camera', [100, 73, 138, 102]], ['above the camera', [146, 40, 186, 66]]]) {
    const c = mean(...area);
    assert.ok(!magenta(c), `the ${name} shows the tab, not the camera: rgb ${c}`);
  }
  const px = (x, y) => [...rgb.subarray((y * 192 + x) * 3, (y * 192 + x) * 3 + 3)];
  let tabPixels = 0;
  for (let y = 0; y < 60; y++) for (let x = 0; x < 140; x++) if (!magenta(px(x, y))) tabPixels++;
  assert.equal(tabPixels, 60 * 140, 'no camera pixel outside its corner');
});

test('while idle the menu streams this tab and my camera', { timeout: 120_000 }, async () => {
  await ext.setOptions({ server: server.url, segment_seconds: 2 });
  const page = await ext.context.newPage();
  await page.goto(`${fixtures.url}/tab.html?menu`);
  await ext.click(page); // the extension is invoked on this tab, as the menu's own click would
  const first = await ext.until(() => ext.broadcast(), { what: 'the click to start' });
  await ext.until(async () => (await ext.popupState()).status?.stream === first.stream, { what: 'live' });
  await ext.click(page);
  await ext.until(async () => (await ext.broadcast()) === null && (await menuHas(['stream-tab']))['stream-tab'],
    { what: 'the stop', timeout: 60_000 });

  await expectMenu(false);
  await menu('stream-tab', page);
  const tab = await ext.until(() => ext.broadcast(), { what: 'the menu to start the tab' });
  assert.equal(tab.source, 'tab');
  assert.notEqual(tab.stream, first.stream);
  await ext.until(async () => (await clipboard(page)) === `${server.url}/play/${tab.stream}`, { what: 'the link copied' });
  await expectMenu(true);
  await menu('stop');
  await ext.until(async () => (await ext.broadcast()) === null, { what: 'the menu to stop', timeout: 60_000 });

  await expectMenu(false);
  await menu('stream-camera', page);
  const cam = await ext.until(() => ext.broadcast(), { what: 'the menu to start the camera' });
  assert.equal(cam.source, 'camera');
  const s = await ext.until(async () => {
    const st = await ext.popupState();
    return st.phase === 'live' && st.status.stream === cam.stream && st;
  }, { what: 'camera live' });
  assert.match(s.state, /camera/);
  await menu('stop');
  await ext.until(async () => (await ext.broadcast()) === null, { what: 'the camera to stop', timeout: 60_000 });
  await expectMenu(false);
});

test('a refused microphone and camera leave the tab streaming, and the panel says why in plain words', { timeout: 90_000 }, async () => {
  const origin = `chrome-extension://${ext.id}`;
  for (const name of ['microphone', 'camera']) {
    await ext.browserSession.send('Browser.setPermission', { origin, permission: { name }, setting: 'denied' });
  }
  try {
    await ext.setOptions({ server: server.url, segment_seconds: 2, mic: true, overlay: { on: true } });
    const page = await ext.context.newPage();
    await page.goto(`${fixtures.url}/tab.html?refused`);
    await ext.click(page);
    const b = await ext.until(() => ext.broadcast(), { what: 'the broadcast' });
    const s = await ext.until(async () => {
      const st = await ext.popupState();
      return st.phase === 'live' && st.status.stream === b.stream && st;
    }, { what: 'the tab to go live without them' });
    console.log('refused:', s.status.notice);
    assert.equal(s.status.source, 'tab');
    assert.equal(s.status.mic, 'off');
    assert.equal(s.status.mixing, true, 'the microphone can still be mixed in once allowed');
    assert.equal(s.status.overlay, false);
    const notice = await (await ext.popup()).evaluate(() => document.getElementById('notice').textContent);
    assert.equal(notice, s.status.notice);
    assert.match(notice, /Chalkstream may not use the microphone: allow it in Options .* The tab streams without your voice\./);
    assert.match(notice, /Chalkstream may not use the camera: allow it in Options .* The tab streams without your face in the corner\./);
    await ext.click(page);
    await ext.until(async () => (await ext.broadcast()) === null, { what: 'the stop', timeout: 60_000 });
  } finally {
    await ext.browserSession.send('Browser.grantPermissions', { origin, permissions: ['audioCapture', 'videoCapture'] });
  }
});
