// The extension under trouble: a server outage, a stopped service worker, a wrong token and
// a server that is not there. Real host, real Chromium, real clicks.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from './lib/server.mjs';
import { launchExtension, serveFixtures, fetchPlaylist, sleep } from './lib/browser.mjs';

const cleanups = [];
afterEach(async () => { while (cleanups.length) await cleanups.pop()().catch(() => {}); });

async function setup({ env = {}, options = {} } = {}) {
  const server = await startServer({ env: { stream_retention: 0, ...env } });
  const box = { server };
  cleanups.push(() => box.server.stop());
  const fixtures = await serveFixtures();
  cleanups.push(() => fixtures.close());
  const ext = await launchExtension();
  cleanups.push(() => ext.close());
  await ext.setOptions({ server: server.url, segment_seconds: 2, ...options });
  const page = await ext.context.newPage();
  await page.goto(`${fixtures.url}/tab.html`);
  return { box, ext, page };
}

const segmentsOf = async (url, stream) => (await fetchPlaylist(url, stream))?.segments.length ?? 0;

test('a 15 s server outage loses nothing: every seq from 0 to the last is in the playlist', { timeout: 300_000 }, async () => {
  const { box, ext, page } = await setup();
  await ext.click(page);
  const b = await ext.until(() => ext.broadcast(), { what: 'the broadcast' });
  await ext.until(async () => (await segmentsOf(box.server.url, b.stream)) >= 2, { what: 'two segments', timeout: 60_000 });

  await box.server.stop();
  await sleep(15_000);
  const during = await ext.popupState();
  console.log('during the outage:', during.state, '|', during.error, '| waiting', during.waiting);
  assert.match(during.error, /Can't reach the server/);
  assert.ok(Number(during.waiting) >= 1, 'segments wait while the server is down');
  box.server = await box.server.restart();

  const sentBefore = during.status.segments_sent;
  await ext.until(async () => (await ext.popupState()).status?.segments_sent >= sentBefore + 6,
    { what: 'the backlog and new segments to be sent', timeout: 120_000 });
  await ext.click(page);
  const pl = await ext.until(async () => { const p = await fetchPlaylist(box.server.url, b.stream); return p?.ended && p; },
    { what: 'EXT-X-ENDLIST', timeout: 120_000 });
  const seqs = pl.segments.map((s) => s.seq);
  assert.deepEqual(seqs, seqs.map((_, i) => i), 'every seq from 0 to the last');
  assert.ok(seqs.length >= sentBefore + 6);
  assert.doesNotMatch(pl.text, /^#EXT-X-DISCONTINUITY$/m, 'nothing was dropped, so no break');
  const done = await ext.until(async () => { const s = await ext.popupState(); return s.phase === 'ended' && s; },
    { what: 'the popup to show the end' });
  assert.equal(done.status.segments_sent, seqs.length);
  assert.equal(done.error, '', 'the outage error clears once uploads succeed');
});

test('stopping the service worker mid-broadcast keeps the same stream going', { timeout: 240_000 }, async () => {
  const { box, ext, page } = await setup();
  await ext.click(page);
  const b = await ext.until(() => ext.broadcast(), { what: 'the broadcast' });
  await ext.until(async () => (await segmentsOf(box.server.url, b.stream)) >= 2, { what: 'two segments', timeout: 60_000 });

  const old = ext.worker();
  await old.evaluate(() => { globalThis.chalkstreamTestMark = 'old worker'; });
  let closed = false;
  old.once('close', () => { closed = true; });
  const popup = await ext.popup();
  const cdp = await ext.context.newCDPSession(popup);
  await cdp.send('ServiceWorker.enable');
  await cdp.send('ServiceWorker.stopAllWorkers');
  await sleep(3000);

  const before = await segmentsOf(box.server.url, b.stream);

  await ext.until(async () => (await segmentsOf(box.server.url, b.stream)) >= before + 3,
    { what: 'segments after the worker stopped', timeout: 60_000 });
  const state = await ext.popupState();
  assert.equal(state.status.stream, b.stream, 'the same stream');
  assert.equal((await ext.broadcast()).session, b.session, 'the same session secret');

  await ext.click(page); // wakes a fresh worker, which must stop, not start a new stream
  const pl = await ext.until(async () => { const p = await fetchPlaylist(box.server.url, b.stream); return p?.ended && p; },
    { what: 'EXT-X-ENDLIST', timeout: 120_000 });
  // The worker that answered the click is a new instance: the old one's global is gone.
  const fresh = ext.context.serviceWorkers().filter((w) => w.url().startsWith(`chrome-extension://${ext.id}/`)).at(-1);
  const mark = await Promise.race([fresh.evaluate(() => globalThis.chalkstreamTestMark ?? null).catch(() => 'stale'),
    sleep(5000).then(() => 'stale')]);
  assert.ok(closed || mark === null, `the old worker was stopped (close event ${closed}, mark ${mark})`);
  const seqs = pl.segments.map((s) => s.seq);
  assert.deepEqual(seqs, seqs.map((_, i) => i));
  assert.doesNotMatch(pl.text, /^#EXT-X-DISCONTINUITY$/m);
  await sleep(2000);
  assert.equal(await ext.broadcast(), null, 'no new broadcast was started');
});

test('a wrong token shows the 401 message and stops retrying', { timeout: 120_000 }, async () => {
  const { ext, page } = await setup({ env: { ingest_token: 'right-token' }, options: { token: 'wrong-token' } });
  await ext.click(page);
  const failed = await ext.until(async () => { const s = await ext.popupState(); return s.phase === 'failed' && s; },
    { what: 'the popup to show the failure', timeout: 60_000 });
  console.log('wrong token:', failed.error);
  assert.match(failed.error, /refused the ingest token \(401\) — check Options/);
  assert.ok(!failed.error.includes('wrong-token') && !failed.error.includes('right-token'), 'no secrets in the message');
  const attempts = failed.status.attempts;
  await sleep(8000);
  const later = await ext.popupState();
  assert.equal(later.phase, 'failed');
  assert.equal(later.status.attempts, attempts, 'no more upload attempts after the 401');
  assert.equal(await ext.broadcast(), null, 'the broadcast is over');
});

test('an unreachable server: segments wait and the popup says so', { timeout: 120_000 }, async () => {
  const { ext, page } = await setup({ options: { server: 'http://127.0.0.1:9' } });
  await ext.click(page);
  const s = await ext.until(async () => {
    const st = await ext.popupState();
    return Number(st.waiting) >= 2 && st;
  }, { what: 'segments waiting', timeout: 60_000 });
  console.log('unreachable:', s.error, '| waiting', s.waiting);
  assert.equal(s.phase, 'live', 'still recording');
  assert.match(s.error, /Can't reach the server at http:\/\/127\.0\.0\.1:9\. Segments wait here/);
  assert.equal(s.status.segments_sent, 0);
});
