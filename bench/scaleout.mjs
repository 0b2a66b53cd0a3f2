//! Scale-out: one instance vs two instances on one Redis, on this one machine. Segment and
//! playlist GETs by wrk (the same 16 connections, split 8 + 8 across two instances as a perfect
//! load balancer would), and what each request costs the shared store, counted by Redis itself
//! (`INFO commandstats`). Both instances share the machine's cores, so read the figures as the
//! per-instance cost of sharing a store, not as capacity.
//!
//! A part for bench/run.mjs (`runScaleOut(ctx)`, `renderScaleOut(result)` for report.mjs), or on
//! its own: `node bench/scaleout.mjs [--smoke]` prints the table and writes
//! target/bench/scaleout-{mode}.json. Needs target/release/chalkstream-host, wrk and redis-server.

import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { wrk } from './lib/wrk.mjs';
import { request } from './lib/http.mjs';
import { newSession, mustPut } from './lib/stream.mjs';
import { segment } from './lib/media.mjs';
import { summary } from './lib/stats.mjs';
import { cpuMeter } from './lib/proc.mjs';
import { startRedis, redisCommand, commandCalls } from './lib/redis.mjs';
import { startHost } from './lib/host.mjs';

const SEGMENT_S = 2;
/** Requests counted for the per-request key-value cost. */
const COUNTED = { uploads: 20, gets: 50 };

/** A live stream of `count` segments, uploaded through `base`. */
async function liveStream(base, bytes, count) {
  const s = newSession();
  const now = Date.now();
  for (let seq = 0; seq < count; seq++) {
    await mustPut(base, s, seq, bytes, { duration: SEGMENT_S, pdt: new Date(now - (count - seq) * SEGMENT_S * 1000) });
  }
  return s;
}

/** wrk with 16 connections in all: on one instance, or 8 + 8 on two at once (sums and worst p99). */
async function load(urls, seconds) {
  const per = 16 / urls.length;
  const runs = await Promise.all(urls.map((u) => wrk(u, { threads: urls.length === 1 ? 2 : 1, connections: per, seconds })));
  return {
    rps: runs.reduce((a, r) => a + r.rps, 0),
    p99_ms: Math.max(...runs.map((r) => r.p99_ms)),
    errors: runs.reduce((a, r) => a + r.errors, 0),
    cmd: runs.map((r) => r.cmd).join(' & '),
  };
}

/** Key-value commands per request, by Redis's counters, for uploads, playlist GETs and segment GETs. */
async function kvCost(redis, base, hd, log) {
  const per = async (n, fn) => {
    await redisCommand(redis.port, ['CONFIG', 'RESETSTAT']);
    await fn();
    const calls = await commandCalls(redis.port);
    // Without our own CONFIG RESETSTAT and INFO (`config|resetstat` in Redis 7).
    return Object.fromEntries(Object.entries(calls).filter(([cmd]) => !/^(config|info)/.test(cmd))
      .map(([cmd, c]) => [cmd, c / n]));
  };
  const s = newSession();
  const now = Date.now();
  const upload = await per(COUNTED.uploads, async () => {
    for (let seq = 0; seq < COUNTED.uploads; seq++) {
      await mustPut(base, s, seq, hd, { duration: SEGMENT_S, pdt: new Date(now + seq * SEGMENT_S * 1000) });
    }
  });
  const getAll = (path) => per(COUNTED.gets, async () => {
    for (let i = 0; i < COUNTED.gets; i++) {
      const r = await request(base + path, { discard: true });
      if (r.status !== 200) throw new Error(`GET ${path} answered ${r.status || r.error}`);
    }
  });
  const playlist = await getAll(`/playlist/${s.id}.m3u8`);
  const chunk = await getAll(`/chunks/${s.id}/5.ts`);
  log(`  key-value commands per upload ${JSON.stringify(upload)}, per playlist GET ${JSON.stringify(playlist)}`);
  return { segment_bytes: hd.length, stream_segments: COUNTED.uploads, upload, playlist, segment: chunk };
}

/** The part: three setups, each GET kind `cfg.runs` times for `cfg.wrkSeconds`. */
export async function runScaleOut({ root, cfg, log }) {
  const hd = segment(root, 'hd2s');
  const redis = await startRedis();
  const dir = mkdtempSync(join(tmpdir(), 'chalkstream-bench-scaleout-'));
  const config = join(dir, 'runtime-config.toml');
  writeFileSync(config, `[key_value_store.default]\ntype = "redis"\nurl = "${redis.url}"\n`);
  const setups = [
    { name: 'one instance, SQLite', key: 'sqlite_1', instances: 1, args: [] },
    { name: 'one instance, Redis', key: 'redis_1', instances: 1, args: ['--runtime-config-file', config] },
    { name: 'two instances, one Redis', key: 'redis_2', instances: 2, args: ['--runtime-config-file', config] },
  ];
  const out = { setups: {}, kv: null };
  try {
    for (const setup of setups) {
      const hosts = [];
      try {
        for (let i = 0; i < setup.instances; i++) hosts.push(await startHost(root, `scaleout-${setup.key}-${i}`, {}, {}, setup.args));
        const s = await liveStream(hosts[0].url, hd, 10);
        const paths = { segment: `/chunks/${s.id}/5.ts`, playlist: `/playlist/${s.id}.m3u8` };
        const result = { name: setup.name, instances: setup.instances };
        for (const [kind, path] of Object.entries(paths)) {
          for (const h of hosts) {
            const r = await request(h.url + path);
            if (r.status !== 200) throw new Error(`${setup.name}: GET ${kind} answered ${r.status || r.error}`);
          }
          const runs = [];
          for (let i = 0; i < cfg.runs; i++) {
            const meters = hosts.map((h) => cpuMeter(h.pid));
            const redisMeter = setup.key === 'sqlite_1' ? null : cpuMeter(redis.pid);
            const r = await load(hosts.map((h) => h.url + path), cfg.wrkSeconds);
            r.hosts_cpu_pct = meters.reduce((a, m) => a + m.stop().percent, 0);
            r.redis_cpu_pct = redisMeter ? redisMeter.stop().percent : NaN;
            runs.push(r);
            log(`  ${setup.name}, GET ${kind} run ${i + 1}: ${r.rps.toFixed(0)} req/s, p99 ${r.p99_ms.toFixed(2)} ms, `
              + `${r.errors} errors, hosts CPU ${r.hosts_cpu_pct.toFixed(0)}%`
              + (redisMeter ? `, redis CPU ${r.redis_cpu_pct.toFixed(0)}%` : ''));
          }
          result[kind] = {
            rps: summary(runs.map((r) => r.rps)), p99_ms: summary(runs.map((r) => r.p99_ms)),
            hosts_cpu_pct: summary(runs.map((r) => r.hosts_cpu_pct)), redis_cpu_pct: summary(runs.map((r) => r.redis_cpu_pct)),
            errors: runs.reduce((a, r) => a + r.errors, 0),
            cmd: runs[0].cmd.replaceAll(/http:\/\/127\.0\.0\.1:\d+/g, 'http://127.0.0.1:PORT').replaceAll(s.id, '{stream}'),
          };
        }
        if (setup.key === 'redis_1') out.kv = await kvCost(redis, hosts[0].url, hd, log);
        out.setups[setup.key] = result;
      } finally {
        for (const h of hosts) await h.stop();
      }
    }
  } finally {
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

const f0 = (x) => (Number.isFinite(x) ? x.toFixed(0) : '–');
const f2 = (x) => (Number.isFinite(x) ? x.toFixed(2) : '–');
const spread = (s, f) => `${f(s.median)} (${f(s.min)}–${f(s.max)})`;

/** Markdown for BENCHMARKS.md: the GET table and the per-request key-value cost. */
export function renderScaleOut(r) {
  const lines = [
    '| setup | GET | req/s | p99 ms | hosts CPU % | redis CPU % | errors |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const s of Object.values(r.setups)) {
    for (const kind of ['segment', 'playlist']) {
      const k = s[kind];
      lines.push(`| ${s.name} | ${kind} | ${spread(k.rps, f0)} | ${spread(k.p99_ms, f2)} | ${f0(k.hosts_cpu_pct.median)} | `
        + `${f0(k.redis_cpu_pct.median)} | ${k.errors} |`);
    }
  }
  if (r.kv) {
    const cmds = [...new Set(['get', 'set', 'del', 'exists', 'ping', ...Object.keys(r.kv.upload),
      ...Object.keys(r.kv.playlist), ...Object.keys(r.kv.segment)])];
    lines.push('', `Redis commands per request (one instance; a stream of ${r.kv.stream_segments} segments of `
      + `${(r.kv.segment_bytes / 1048576).toFixed(2)} MiB; \`PING\` is Spin's, once per store open):`, '',
    `| request | ${cmds.map((c) => `\`${c.toUpperCase()}\``).join(' | ')} |`,
    `| --- | ${cmds.map(() => '---:').join(' | ')} |`);
    for (const [name, row] of [['segment upload', r.kv.upload], ['playlist GET', r.kv.playlist], ['segment GET', r.kv.segment]]) {
      lines.push(`| ${name} | ${cmds.map((c) => (row[c] ? row[c].toFixed(1) : '0')).join(' | ')} |`);
    }
  }
  return lines.join('\n');
}

async function main() {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..');
  const mode = process.argv.includes('--smoke') ? 'smoke' : 'default';
  const cfg = mode === 'smoke' ? { runs: 1, wrkSeconds: 1 } : { runs: 3, wrkSeconds: 5 };
  const result = await runScaleOut({ root, cfg, log: (m) => console.log(m) });
  mkdirSync(join(root, 'target', 'bench'), { recursive: true });
  writeFileSync(join(root, 'target', 'bench', `scaleout-${mode}.json`), JSON.stringify(result, null, 1));
  console.log(`\n${renderScaleOut(result)}`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e) => { console.error(`scaleout: ${e.stack || e.message}`); process.exit(1); });
}
