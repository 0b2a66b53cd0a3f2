// The origin is made for a cache in front (DESIGN.md, "Serving"): with nginx configured by
// deploy/nginx/chalkstream.conf between the bundled host and its low-latency viewers (blocking
// playlist reloads and held part requests, bench/ll.mjs's viewer model), the origin's request
// rate does not grow with the audience, and every viewer still gets every part.
//
//   node --test tests/cache/            (needs scripts/build and Debian's nginx: scripts/setup --bench)
//
// CHALKSTREAM_CACHE_TEST=direct points the viewers at the origin itself and =nolock runs nginx with
// `proxy_cache_lock off`: both must fail, which is how this test was seen to fail for the reason it
// exists: 30 origin GETs/s for 5 viewers and 300 for 50 (9.8x) directly, the same with the lock
// off (each viewer asks for a part or playlist before it exists, so nothing is cached yet); 6 and 6
// through the deployed file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startHost } from '../../bench/lib/host.mjs';
import { request } from '../../bench/lib/http.mjs';
import { startCache, originLog, audience, DEPLOY_CONF } from '../../bench/cache.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const VARIANT = process.env.CHALKSTREAM_CACHE_TEST ?? 'nginx';
const SMALL = 5;
const LARGE = 50;
const SECONDS = 10;

test('an audience 10x larger behind nginx costs the origin less than 2x the requests, every viewer keeping up',
  { timeout: 120_000 }, async () => {
    for (const bin of ['target/release/chalkstream-host', 'target/wasm32-wasip2/release/chalkstream_spin_app.wasm']) {
      assert.ok(existsSync(join(ROOT, bin)), `${bin} is missing: run scripts/build`);
    }
    assert.ok(existsSync(DEPLOY_CONF));
    const host = await startHost(ROOT, 'cache-test', { idle_timeout: 3600 });
    let cache = null;
    try {
      cache = VARIANT === 'direct' ? null : await startCache({ origin: host.url, lock: VARIANT !== 'nolock' });
      const base = cache ? cache.url : host.url;
      const log = originLog(host.log);

      // The deployed file is what runs: answers pass through with the origin's headers, and the
      // origin's one second for a miss is honoured (a stream's viewers waiting for it to start
      // cost the origin one request a second).
      if (cache) {
        const url = `${cache.url}/playlist/${'0'.repeat(40)}.m3u8`;
        const miss = await request(url);
        assert.equal(miss.status, 404);
        assert.equal(miss.headers['cache-control'], 'public, max-age=1');
        assert.equal(miss.headers['access-control-allow-origin'], '*');
        assert.equal(miss.headers['x-cache-status'], 'MISS');
        assert.equal((await request(url)).headers['x-cache-status'], 'HIT');
      }

      const small = await audience({ origin: host.url, base, log, n: SMALL, seconds: SECONDS });
      console.log(`${SMALL} viewers (${VARIANT}): ${small.note}`);
      const large = await audience({ origin: host.url, base, log, n: LARGE, seconds: SECONDS });
      console.log(`${LARGE} viewers (${VARIANT}): ${large.note}`);

      for (const r of [small, large]) {
        assert.equal(r.errors, 0, `${r.n} viewers: ${r.last_error}`);
        assert.ok(r.kept_up >= 0.9, `${r.n} viewers fetched ${(r.kept_up * 100).toFixed(0)}% of the parts made since they joined`);
      }
      const ratio = large.origin_per_s / small.origin_per_s;
      assert.ok(ratio < 2,
        `the origin answered ${small.origin_per_s.toFixed(1)} GETs/s for ${SMALL} viewers and ${large.origin_per_s.toFixed(1)} `
        + `for ${LARGE} (${ratio.toFixed(1)}x): the cache does not hold the origin's load constant`);
      // And constant means about what one viewer costs, not an audience: three parts a second and
      // one blocking reload per part, plus the preload hint past each segment's last part.
      assert.ok(large.origin_per_s < 15, `${large.origin_per_s.toFixed(1)} origin GETs/s for ${LARGE} viewers`);
      if (cache) {
        const errors = cache.errors().split('\n').filter((l) => /\[(error|crit|alert|emerg)\]/.test(l));
        assert.deepEqual(errors, [], 'nginx logged errors');
      }
    } finally {
      await cache?.stop();
      await host.stop();
    }
  });
