// Takes the README's screenshots of the streamer's side with real Chromium: the stream panel
// while a tab is live with the microphone mixed in, the options page, and the player showing a
// tab with the (fake) camera in the corner. Usage: node docs/screenshots.mjs (after
// sh extension/build.sh and a host build); writes docs/img/.
import { join } from 'node:path';
import { startServer, ROOT } from '../tests/e2e/lib/server.mjs';
import { launchExtension, serveFixtures, fetchPlaylist, sleep } from '../tests/e2e/lib/browser.mjs';

const IMG = join(ROOT, 'docs', 'img');
const server = await startServer({ env: { stream_retention: 0 } });
const fixtures = await serveFixtures();
// Chromium's fake camera and microphone, allowed over the DevTools protocol (the fake-UI flag
// would break tab capture).
const ext = await launchExtension({ args: ['--use-fake-device-for-media-stream'] });
try {
  await ext.browserSession.send('Browser.grantPermissions', { origin: `chrome-extension://${ext.id}`,
    permissions: ['audioCapture', 'videoCapture'] });
  // Whole segments: the screenshot needs nothing of low latency.
  await ext.setOptions({ server: server.url, segment_seconds: 2, low_latency: false, quality: '720p', mic: true,
    overlay: { on: true, corner: 'bottom-right', size: 'medium' } });

  const options = await ext.context.newPage();
  await options.goto(`chrome-extension://${ext.id}/options.html`);
  await sleep(1000);
  // Clips, not viewport changes: every page shares the one window, and the tab being captured
  // would change shape with it.
  await options.screenshot({ path: join(IMG, 'options.png'), fullPage: true, clip: { x: 320, y: 0, width: 640, height: 1000 } });
  await options.close();

  const page = await ext.context.newPage();
  await page.goto(`${fixtures.url}/tab.html`);
  await ext.click(page);
  const b = await ext.until(() => ext.broadcast(), { what: 'the broadcast' });
  await ext.until(async () => (await fetchPlaylist(server.url, b.stream))?.segments.length >= 3,
    { what: 'three segments', timeout: 60_000 });

  const popup = await ext.popup();
  await ext.until(async () => (await ext.popupState()).phase === 'live', { what: 'live' });
  await sleep(1500);
  await popup.screenshot({ path: join(IMG, 'popup.png'), clip: { x: 0, y: 0, width: 340, height: 520 } });

  const player = await ext.context.newPage();
  await player.goto(`${server.url}/play/${b.stream}`);
  await player.waitForFunction(() => window.chalkstreamPlayer?.firstFrameAt != null, null, { timeout: 60_000 });
  await sleep(3000);
  await player.screenshot({ path: join(IMG, 'player-overlay.png') });
  await ext.click(page);
  await sleep(3000);
  console.log('docs/img: options.png, popup.png, player-overlay.png');
} finally {
  await ext.close();
  await fixtures.close();
  await server.stop();
}
