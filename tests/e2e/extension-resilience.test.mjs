// The extension under trouble: a server outage, a stopped service worker, a wrong token and
// a server that is not there. Real host, real Chromium, real clicks.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startServer } from './lib/server.mjs';
import { launchExtension, serveFixtures, fetchPlaylist, playlistParts, decodedVideoFrames, sleep } from './lib/browser.mjs';

const run = promisify(execFile);

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

/** The seqs a playlist lists as `#EXT-X-GAP` (given up: no media). */
function gapSeqs(pl) {
  const gaps = new Set();
  let gap = false; let i = 0;
  for (const line of pl.text.split('\n')) {
    if (line === '#EXT-X-GAP') gap = true;
    else if (line && !line.startsWith('#')) {
      if (gap) gaps.add(pl.segments[i].seq);
      gap = false; i += 1;
    }
  }
  return gaps;
}

/** Keys of the store at `stateDir` that name `stream` (read-only, while a host may write). */
async function keysOf(stateDir, stream) {
  const { stdout } = await run('sqlite3', ['-readonly', '-cmd', '.timeout 10000', join(stateDir, 'sqlite_key_value.db'),
    `SELECT key FROM spin_key_value WHERE instr(key, '${stream}') > 0`]);
  return stdout.split('\n').filter(Boolean);
}

/**
 * Issue 18, "resume always works": an outage longer than retention, the sweep deleting the
 * stream in between, and the same session's stream plays again afterwards.
 */
async function outageWithSweep({ lowLatency }) {
  // Retention 15 s, idle timeout 5 s: a stream silent for a minute or so is deleted by the sweep.
  const admin = randomBytes(16).toString('hex');
  const env = { stream_retention: 0.25, idle_timeout: 5, admin_token: admin };
  const { box, ext, page } = await setup({ env, options: { low_latency: lowLatency } });
  await ext.click(page);
  const b = await ext.until(() => ext.broadcast(), { what: 'the broadcast' });
  await ext.until(async () => (await segmentsOf(box.server.url, b.stream)) >= 2, { what: 'two segments', timeout: 60_000 });
  // With parts, the server goes down while a segment is open (some of its parts stored, no
  // commit): the sweep deletes those parts too, so the extension's commit of that segment is
  // refused after.
  const before = await ext.until(async () => {
    const p = await fetchPlaylist(box.server.url, b.stream);
    const last = p?.segments.at(-1)?.seq ?? -1;
    return p && (!lowLatency || playlistParts(box.server.url, p.text).some((part) => part.seq > last)) && p;
  }, { what: 'an open segment', timeout: 30_000 });
  const lastBefore = before.segments.at(-1).seq;

  await box.server.stop();
  const downAt = Date.now();
  // The sweep runs on a host over the same store on another port, which the extension does not
  // know: it cannot upload between the sweep and the restart.
  const sweeper = await startServer({ env, stateDir: box.server.stateDir });
  cleanups.push(() => sweeper.stop());
  let deleted = 0; let sweeps = 0;
  await ext.until(async () => {
    const res = await fetch(`${sweeper.url}/admin/sweep`, { method: 'POST', headers: { authorization: `Bearer ${admin}` } });
    assert.equal(res.status, 200, 'the admin token runs the sweep');
    const report = await res.json();
    sweeps += 1; deleted += report.deleted;
    if (deleted >= 1) return true;
    await sleep(2000);
    return false;
  }, { what: 'the sweep to delete the stream', timeout: 150_000 });
  const outage = await ext.popupState();
  console.log(`swept after ${((Date.now() - downAt) / 1000).toFixed(0)} s (${sweeps} sweeps):`, outage.state, '|', outage.error, '| waiting', outage.waiting);
  assert.equal((await fetch(`${sweeper.url}/playlist/${b.stream}.m3u8`)).status, 404, 'the stream is gone');
  assert.equal((await fetch(`${sweeper.url}/api/streams/${b.stream}`)).status, 404, 'its status too');
  const left = await keysOf(box.server.stateDir, b.stream);
  console.log('keys left after the sweep:', left.length);
  assert.deepEqual(left, [], 'nothing of the stream is left in the store');
  assert.equal(outage.phase, 'live', 'still broadcasting through the outage');
  assert.match(outage.error, /Can't reach the server/);
  await sweeper.stop();
  // The outage lasts at least 25 s, longer than retention and the idle timeout, so a backlog of
  // expired media waits too.
  await sleep(Math.max(0, downAt + 25_000 - Date.now()));

  box.server = await box.server.restart();
  const upAt = Date.now();
  // The same session goes on: the stream is listed again, with segments captured after the
  // server came back (not counting a seq given up, which has no media).
  const capturedAfter = (p) => { const gaps = gapSeqs(p); return p.segments.filter((s) => s.pdt >= upAt && !gaps.has(s.seq)); };
  const pl = await ext.until(async () => {
    const p = await fetchPlaylist(box.server.url, b.stream);
    return p && !p.ended && capturedAfter(p).length >= 3 && p;
  }, { what: 'new segments in the playlist after the outage', timeout: 150_000 });
  console.log(`resumed ${((Date.now() - upAt) / 1000).toFixed(0)} s after the restart:`, pl.segments.map((s) => s.seq).join(' '),
    '| gaps', [...gapSeqs(pl)].join(' '));
  const fresh = capturedAfter(pl);
  assert.ok(fresh.every((s) => s.seq > lastBefore), 'new seqs, never one from before the outage');
  const state = await ext.popupState();
  assert.equal(state.phase, 'live', 'the broadcast never stopped');
  assert.equal(state.status.stream, b.stream, 'the same stream');
  assert.equal((await ext.broadcast()).session, b.session, 'the same session secret');
  // ffmpeg decodes the new segments (the newest three: retention deletes the older ones soon).
  const frames = await decodedVideoFrames(fresh.slice(-3).map((s) => s.uri));
  for (const f of frames) assert.ok(f.frames > 0, `${f.uri} decodes (${f.frames} frames)`);

  // And a viewer plays it.
  const viewer = await ext.context.newPage();
  await viewer.goto(`${box.server.url}/play/${b.stream}`);
  const played = () => viewer.evaluate(() => {
    const p = window.chalkstreamPlayer; const v = p?.video;
    return v && { state: p.state, t: v.currentTime, frames: v.getVideoPlaybackQuality().totalVideoFrames, wall: Date.now() };
  });
  const a = await ext.until(async () => { const s = await played(); return s?.t > 0.5 && s; },
    { what: 'the player to start', timeout: 60_000 });
  // Three seconds of media and more frames: it plays (this machine is shared, so the test
  // counts what was played, not how fast).
  let last = a;
  const b2 = await ext.until(async () => { last = await played(); return last.t > a.t + 3 && last; },
    { what: `the player to play on from ${a.t} s`, timeout: 60_000 }).catch((e) => {
    throw new Error(`${e.message}; it is at ${JSON.stringify(last)}`);
  });
  console.log(`the player: ${a.state}, ${(b2.t - a.t).toFixed(1)} s of media in ${((b2.wall - a.wall) / 1000).toFixed(1)} s`);
  assert.ok(b2.frames > a.frames, `frames decoded: ${a.frames} -> ${b2.frames}`);
  assert.equal(b2.state, 'live');
  await viewer.close();

  await ext.click(page);
  await ext.until(async () => (await fetchPlaylist(box.server.url, b.stream))?.ended,
    { what: 'EXT-X-ENDLIST', timeout: 120_000 });
  await ext.until(async () => (await ext.popupState()).phase === 'ended', { what: 'the popup to show the end', timeout: 120_000 });
  assert.equal((await ext.popupState()).error, '', 'the outage error clears once uploads succeed');
}

test('an outage longer than retention, with the sweep in between: the same stream plays again', { timeout: 480_000 },
  () => outageWithSweep({ lowLatency: true }));

test('an outage longer than retention, with the sweep in between: whole segments play again too', { timeout: 480_000 },
  () => outageWithSweep({ lowLatency: false }));

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

test('an upload over the server\'s size limit shows the 413 message and stops retrying', { timeout: 120_000 }, async () => {
  // Every part of a 720p tab is larger than 2000 bytes: nothing this broadcast makes fits.
  const { box, ext, page } = await setup({ env: { max_segment_bytes: 2000 } });
  await ext.click(page);
  const failed = await ext.until(async () => { const s = await ext.popupState(); return s.phase === 'failed' && s; },
    { what: 'the popup to show the failure', timeout: 60_000 });
  console.log('too large:', failed.error);
  assert.match(failed.error, /refused an upload as larger than its limit \(413\) — choose a lower Quality or a shorter Segment length in Options/);
  assert.match(failed.error, /The server said: .*2000 bytes/, 'the server\'s own words say the limit');
  const attempts = failed.status.attempts;
  assert.ok(attempts >= 1);
  await sleep(8000);
  const later = await ext.popupState();
  assert.equal(later.phase, 'failed');
  assert.equal(later.status.attempts, attempts, 'no more upload attempts after the 413');
  assert.equal(await ext.broadcast(), null, 'the broadcast is over');
  assert.equal(await fetchPlaylist(box.server.url, failed.status.stream), null, 'nothing was stored');
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
