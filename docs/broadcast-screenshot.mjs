// Takes the README's screenshot of the broadcast page (GET /broadcast) live on a phone-sized
// screen, with real Chromium's fake camera and microphone and no extension. Usage:
// node docs/broadcast-screenshot.mjs (after scripts/build); writes docs/img/broadcast.png.
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startServer, ROOT } from '../tests/e2e/lib/server.mjs';
import { fetchPlaylist, sleep } from '../tests/e2e/lib/browser.mjs';

const server = await startServer();
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless=new', '--no-sandbox',
  '--disable-gpu', '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'] });
try {
  const page = await browser.newPage({ viewport: { width: 390, height: 760 }, deviceScaleFactor: 2 });
  await page.goto(`${server.url}/broadcast`);
  await page.click('#go');
  await page.waitForFunction(() => document.body.dataset.phase === 'live', null, { timeout: 60_000 });
  const stream = await page.evaluate(() => document.body.dataset.stream);
  for (let i = 0; i < 120 && !((await fetchPlaylist(server.url, stream))?.segments.length >= 4); i++) await sleep(500);
  await page.screenshot({ path: join(ROOT, 'docs', 'img', 'broadcast.png') });
  await page.click('#stop');
} finally {
  await browser.close();
  await server.stop();
}
