// Renders player/art/og.html to player/src/og.png (1200x630) with Debian Chromium.
import { chromium } from 'playwright-core';
import { fileURLToPath } from 'node:url';
const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless=new', '--no-sandbox', '--disable-gpu'] });
const page = await browser.newPage({ viewport: { width: 1200, height: 630 } });
await page.goto(`file://${here('./og.html')}`);
await page.screenshot({ path: here('../src/og.png') });
await browser.close();
