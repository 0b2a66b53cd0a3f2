//! An origin for caches (issue "serverless envelope", item 4): the low-latency audience of
//! bench/ll.mjs (blocking playlist reloads and held part requests, as hls.js makes them) watching
//! through nginx configured by deploy/nginx/chalkstream.conf, against watching the origin
//! directly. What it measures: the origin's requests per viewer-minute, counted from the host's
//! request log (one line per answered request), with and without the cache; how late each part
//! reaches a viewer either way; and how many held viewers nginx serves on this machine with
//! every one keeping up. tests/cache/ asserts the same with a few viewers.
//!
//!   node bench/cache.mjs [--smoke] [--out FILE]       (scripts/bench --only cache)
//!
//! The broadcaster is bench/ll.mjs's (wire contract v2): one part every 334 ms, six to a 2 s
//! segment, then a commit. Parts are synthetic MPEG-TS packets (the server checks only the shape),
//! about 1.5 Mbit/s, so no ffmpeg is needed.

import { mkdirSync, mkdtempSync, openSync, readSync, closeSync, statSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import net from 'node:net';
import { startHost } from './lib/host.mjs';
import { NGINX_BIN, freePort } from './lib/nginx.mjs';
import { agent, request, sleep } from './lib/http.mjs';
import { newSession } from './lib/stream.mjs';
import { percentile } from './lib/stats.mjs';
import { cpuMeter, descendants, processMeter } from './lib/proc.mjs';
import { putPart, commit, broadcast, viewer, PARTS, PART_MS } from './ll.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const DEPLOY_CONF = join(ROOT, 'deploy', 'nginx', 'chalkstream.conf');

/** `n` synthetic parts of `packets` MPEG-TS packets each (sync byte, then a fill). */
export function syntheticParts(n = PARTS, packets = 330) {
  return Array.from({ length: n }, (_, i) => {
    const b = Buffer.alloc(packets * 188, 0x10 + i);
    for (let p = 0; p < b.length; p += 188) b[p] = 0x47;
    return b;
  });
}

/**
 * deploy/nginx/chalkstream.conf with only what must differ on a test machine replaced: the port
 * it listens on, the origin's address and the cache directory (and, with `lock: false`, the cache
 * lock turned off, to show what it does). Throws when one of them is no longer in the file, so
 * the file tested is always the file shipped.
 */
export function deployConf({ port, origin, cacheDir, lock = true }) {
  let conf = readFileSync(DEPLOY_CONF, 'utf8');
  const replace = (from, to) => {
    if (!conf.includes(from)) throw new Error(`${DEPLOY_CONF} no longer says \`${from}\``);
    conf = conf.replace(from, to);
  };
  replace('listen 80;', `listen 127.0.0.1:${port};`);
  // Viewers' and broadcasters' instances: the one test origin for both.
  replace('server 127.0.0.1:3001;', `server ${new URL(origin).host};`);
  replace('server 127.0.0.1:3000;', `server ${new URL(origin).host};`);
  replace('proxy_cache_path /var/cache/nginx/chalkstream ', `proxy_cache_path ${cacheDir} `);
  if (!lock) replace('proxy_cache_lock on;', 'proxy_cache_lock off;');
  return conf;
}

async function waitForPort(port, ms) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const ok = await new Promise((r) => {
      const c = net.connect(port, '127.0.0.1', () => { c.end(); r(true); });
      c.on('error', () => r(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`nginx did not listen on 127.0.0.1:${port} within ${ms} ms`);
}

/**
 * Debian's nginx in front of `origin`, configured by deploy/nginx/chalkstream.conf, with its own
 * prefix, pid file and cache in a temporary directory (never the system's nginx service).
 * Resolves to `{ url, dir, pid, stop() }`; stop() ends it (SIGQUIT, then SIGKILL) and removes the
 * directory.
 */
export async function startCache({ origin, lock = true, workers = 1 }) {
  const dir = mkdtempSync(join(tmpdir(), 'chalkstream-cache-'));
  // The workers run as `nobody` when nginx starts as root: they need to reach and write these.
  chmodSync(dir, 0o755);
  for (const sub of ['cache', 'temp']) {
    mkdirSync(join(dir, sub));
    chmodSync(join(dir, sub), 0o777);
  }
  const port = await freePort();
  writeFileSync(join(dir, 'chalkstream.conf'), deployConf({ port, origin, cacheDir: join(dir, 'cache'), lock }));
  const t = join(dir, 'temp');
  writeFileSync(join(dir, 'nginx.conf'), `
daemon off;
worker_processes ${workers};
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${t}/body;
  proxy_temp_path ${t}/proxy;
  fastcgi_temp_path ${t}/fastcgi;
  uwsgi_temp_path ${t}/uwsgi;
  scgi_temp_path ${t}/scgi;
  include ${dir}/chalkstream.conf;
}
`);
  const child = spawn(NGINX_BIN, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((r) => child.once('exit', r));
  await Promise.race([waitForPort(port, 10_000),
    exited.then((c) => { throw new Error(`nginx exited with ${c}: ${stderr.trim()}`); })]);
  return {
    url: `http://127.0.0.1:${port}`, dir, pid: child.pid,
    errors: () => { try { return readFileSync(join(dir, 'error.log'), 'utf8'); } catch { return ''; } },
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGQUIT');
        const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The origin's request log (the host's stderr, a line per answered request: `GET /path 200 1.2ms`,
 * the path without its query). `mark()` is a position in it; `gets(from, to)` counts the viewers'
 * requests (GET and HEAD) between two marks: all, playlists (plain and blocking reloads), parts.
 */
export function originLog(path) {
  return {
    mark: () => statSync(path).size,
    gets(from, to) {
      const fd = openSync(path, 'r');
      const buf = Buffer.alloc(to - from);
      readSync(fd, buf, 0, buf.length, from);
      closeSync(fd);
      const lines = buf.toString('utf8').split('\n').filter((l) => /^(GET|HEAD) \//.test(l));
      const by = (re) => lines.filter((l) => re.test(l)).length;
      return {
        total: lines.length,
        playlists: by(/^\S+ \/playlist\//),
        parts: by(/^\S+ \/chunks\/[0-9a-f]+\/\d+\.\d+\.ts /),
      };
    },
  };
}

/**
 * One audience: a new stream, its broadcaster in real time, `n` low-latency viewers (bench/ll.mjs)
 * joining within a second through `base` (the cache or the origin), watching for
 * `warmSeconds + seconds`. The origin's requests are counted over the last `seconds` (the viewers
 * have reached the live edge by then). Resolves to the figures and whether every viewer kept up.
 */
export async function audience({ origin, base, log, n, seconds, warmSeconds = 3, parts = syntheticParts(), keepUp = 0.9 }) {
  const s = newSession();
  const a = agent(1);
  // Two sealed segments first: a v2 playlist exists once its first segment is sealed.
  for (let seq = 0; seq < 2; seq++) {
    for (let part = 0; part < PARTS; part++) {
      const r = await putPart(origin, s, seq, part, parts[part], { agent: a });
      if (r.status !== 201) throw new Error(`part ${seq}.${part} answered ${r.status || r.error}`);
    }
    const c = await commit(origin, s, seq, PARTS, a);
    if (c.status !== 201) throw new Error(`commit ${seq} answered ${c.status || c.error}`);
  }
  a.destroy();
  const t0 = Date.now();
  const stopAt = t0 + (warmSeconds + seconds) * 1000;
  const bst = { put: [], errors: 0, lastError: null, stored: new Map() };
  // The broadcaster uploads to the origin, as the extension does (uploads are never cached).
  const pushing = broadcast(origin, s, parts, stopAt + 2 * PART_MS, bst, 2);
  const st = { reload: [], part: [], late: [], joined: [], fetched: 0, requests: 0, errors: 0, bytes: 0, lastError: null, unused_hints: 0 };
  const watching = Promise.all(Array.from({ length: n }, async (_, i) => {
    await sleep((i * 1000) / n);
    return viewer(base, s.id, stopAt, st, bst.stored);
  }));
  await sleep(t0 + warmSeconds * 1000 - Date.now());
  const from = log.mark();
  const m0 = performance.now();
  await sleep(stopAt - Date.now());
  const to = log.mark();
  const measured = (performance.now() - m0) / 1000;
  await watching;
  await pushing;
  const gets = log.gets(from, to);
  // As bench/ll.mjs: a viewer that keeps up has fetched every part made since it joined.
  const made = [...bst.stored].filter(([, t]) => t <= stopAt).map(([k]) => k.split('.').map(Number));
  const due = st.joined.reduce((sum, j) =>
    sum + made.filter(([msn, part]) => msn > j.msn || (msn === j.msn && part >= j.part)).length, 0);
  const keptUp = due ? st.fetched / due : 0;
  const r = {
    n, seconds: measured,
    origin_gets: gets.total, origin_per_s: gets.total / measured, origin_per_viewer_minute: (gets.total / measured) * 60 / n,
    origin_playlists_per_s: gets.playlists / measured, origin_parts_per_s: gets.parts / measured,
    viewer_requests_per_s: st.requests / (warmSeconds + seconds),
    kept_up: keptUp, parts: st.part.length, errors: st.errors + bst.errors, last_error: st.lastError ?? bst.lastError,
    late_p50_ms: percentile(st.late, 50), late_p99_ms: percentile(st.late, 99),
    reload_p50_ms: percentile(st.reload, 50), part_p50_ms: percentile(st.part, 50),
  };
  r.pass = r.errors === 0 && keptUp >= keepUp && r.parts > 0;
  r.note = `${r.origin_per_s.toFixed(1)} origin GETs/s (${r.origin_playlists_per_s.toFixed(1)} playlists, ${r.origin_parts_per_s.toFixed(1)} parts), `
    + `${r.origin_per_viewer_minute.toFixed(0)} per viewer-minute; viewers made ${r.viewer_requests_per_s.toFixed(0)} req/s; `
    + `${(keptUp * 100).toFixed(0)}% of the parts fetched, upload to delivery p50 ${r.late_p50_ms.toFixed(0)} ms `
    + `p99 ${r.late_p99_ms.toFixed(0)} ms, ${r.errors} errors${r.last_error ? ` (${r.last_error})` : ''}`;
  return r;
}

const MODES = {
  smoke: { ns: [3], seconds: 4, nginxNs: [3] },
  default: { ns: [5, 50], seconds: 20, nginxNs: [50, 100, 200, 400] },
};

/** The bench part: origin requests per viewer-minute with and without nginx, and held viewers through it. */
export async function runCache({ root = ROOT, mode = 'default', log = console.log } = {}) {
  const cfg = MODES[mode] ?? MODES.default;
  const host = await startHost(root, 'cache', { idle_timeout: 3600 });
  const cache = await startCache({ origin: host.url });
  const origin = originLog(host.log);
  const out = { direct: [], nginx: [], held: [], seconds: cfg.seconds, part_ms: PART_MS };
  try {
    for (const n of cfg.ns) {
      for (const [name, base] of [['direct', host.url], ['nginx', cache.url]]) {
        const r = await audience({ origin: host.url, base, log: origin, n, seconds: cfg.seconds });
        out[name].push(r);
        log(`  cache: ${n} viewers ${name === 'direct' ? 'at the origin' : 'through nginx'}: ${r.pass ? 'pass' : 'FAIL'} ${r.note}`);
      }
    }
    // How many held viewers nginx serves here with every one keeping up (and what the host and
    // nginx cost meanwhile): the low-latency audience of bench/ll.mjs, through the cache.
    // A step passes as bench/ll.mjs's do: no errors, 90% of the parts fetched, and each part
    // delivered within a second of its upload (p99); nginx's own wait adds up to 500 ms (README).
    for (const n of cfg.nginxNs) {
      const hostCpu = cpuMeter(host.pid);
      const nginxCpu = processMeter(() => [cache.pid, ...descendants(cache.pid).map((p) => p.pid)]);
      const nginxCpu0 = nginxCpu.total();
      const own = process.cpuUsage();
      const t0 = performance.now();
      const r = await audience({ origin: host.url, base: cache.url, log: origin, n, seconds: cfg.seconds });
      const wall = (performance.now() - t0) / 1000;
      r.host_cpu_pct = hostCpu.stop().percent;
      r.nginx_cpu_pct = (100 * (nginxCpu.total() - nginxCpu0)) / wall;
      nginxCpu.stop();
      const used = process.cpuUsage(own);
      r.client_cpu_pct = ((used.user + used.system) / 1e6 / wall) * 100;
      r.pass = r.pass && r.late_p99_ms < 1000;
      out.held.push(r);
      log(`  cache: ${n} held viewers through nginx: ${r.pass ? 'pass' : 'FAIL'} ${r.note}, CPU: host ${r.host_cpu_pct.toFixed(0)}%, `
        + `nginx ${r.nginx_cpu_pct.toFixed(0)}%, load generator ${r.client_cpu_pct.toFixed(0)}%`);
      if (!r.pass) break;
    }
    out.held_best = Math.max(0, ...out.held.filter((r) => r.pass).map((r) => r.n));
    const errors = cache.errors().split('\n').filter((l) => /\[(error|crit|alert|emerg)\]/.test(l));
    out.nginx_errors = errors.slice(0, 5);
  } finally {
    await cache.stop();
    await host.stop();
  }
  return out;
}

function markdown(r, cmd) {
  const rows = (list, through) => list.map((x) => `| ${x.n} | ${through} | ${x.origin_per_s.toFixed(1)} | `
    + `${x.origin_per_viewer_minute.toFixed(0)} | ${(x.kept_up * 100).toFixed(0)}% | ${x.late_p50_ms.toFixed(0)} / ${x.late_p99_ms.toFixed(0)} ms | ${x.errors} |`);
  return [`## Origin for caches (\`${cmd}\`)`, '',
    `Low-latency viewers (bench/ll.mjs's, ${r.part_ms} ms parts), ${r.seconds} s measured per row; origin GETs counted from the host's request log.`, '',
    '| viewers | through | origin GETs/s | per viewer-minute | parts fetched | upload to delivery p50 / p99 | errors |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    ...rows(r.direct, 'origin'), ...rows(r.nginx, 'nginx'), ...rows(r.held, 'nginx (held viewers)'), '',
    `Held viewers through nginx with every one keeping up (90% of the parts, p99 upload to delivery under 1 s): ${r.held_best}.`,
    ...r.held.map((x) => `- ${x.n} held viewers: CPU host ${x.host_cpu_pct.toFixed(0)}%, nginx ${x.nginx_cpu_pct.toFixed(0)}%, `
      + `load generator ${x.client_cpu_pct.toFixed(0)}% (of one core; ${x.pass ? 'pass' : 'fail'})`), ''].join('\n');
}

async function main() {
  const args = process.argv.slice(2);
  const mode = args.includes('--smoke') ? 'smoke' : 'default';
  const o = args.indexOf('--out');
  console.log(`bench: part cache (${mode})`);
  const r = await runCache({ mode });
  mkdirSync(join(ROOT, 'target', 'bench'), { recursive: true });
  writeFileSync(join(ROOT, 'target', 'bench', `results-cache-${mode}.json`), JSON.stringify(r, null, 1));
  const md = markdown(r, `scripts/bench --only cache${mode === 'smoke' ? ' --smoke' : ''}`);
  if (o >= 0) writeFileSync(args[o + 1], md);
  console.log(md);
  const failed = [...r.nginx].some((x) => !x.pass) || !r.held.length;
  if (failed) { console.error('bench: part cache FAILED: a step through nginx did not keep up'); process.exit(1); }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e) => { console.error(`bench: ${e.stack || e.message}`); process.exit(1); });
}
