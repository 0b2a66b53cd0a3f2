//! The recording download with a long stream (issue 20, item 5: "a 1-hour retained stream
//! downloads with flat server memory"). One host keeps everything (`stream_retention` 0); a
//! broadcaster uploads an hour of 2 s 720p segments (1 MiB each, a 4 Mbit/s stream) as fast as the
//! host takes them, with program date-times two seconds apart, and ends it. Then one client
//! downloads `GET /download/{stream}.ts` as fast as it reads, while the host's resident memory is
//! sampled every 50 ms. The component streams the answer value by value from the store, so the
//! host's memory should not grow with the file.
//!
//! Prints the figures and the verdicts, computed: every byte stored came back (the download's
//! length is the sum of the segments'), and the host's RSS grew by less than 64 MiB over its
//! level before the download (a 1.9 GB file). Writes target/bench/download-<mode>.json.
//!
//! `scripts/bench --only download` (about 4 minutes); `--smoke`: one minute of stream, checks only
//! that it counts. `CHALKSTREAM_DOWNLOAD_MIN` sets the stream's minutes (60).

import http from 'node:http';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startHost } from './lib/host.mjs';
import { segment } from './lib/media.mjs';
import { newSession, mustPut, endStream } from './lib/stream.mjs';
import { agent as keepAlive, sleep } from './lib/http.mjs';
import { rssBytes } from './lib/proc.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const smoke = process.argv.includes('--smoke');
const minutes = smoke ? 1 : Number(process.env.CHALKSTREAM_DOWNLOAD_MIN || 60);
const FLAT_MIB = 64;
const MiB = 1024 * 1024;

/** Downloads `url`, counting bytes, sampling `pid`'s RSS every 50 ms; the peak and the count. */
function download(url, pid) {
  return new Promise((resolve, reject) => {
    let peak = rssBytes(pid);
    const sampler = setInterval(() => { peak = Math.max(peak, rssBytes(pid)); }, 50);
    const t0 = performance.now();
    http.get(url, (res) => {
      let bytes = 0;
      res.on('data', (c) => { bytes += c.length; });
      res.on('end', () => {
        clearInterval(sampler);
        peak = Math.max(peak, rssBytes(pid));
        resolve({ status: res.statusCode, headers: res.headers, bytes, seconds: (performance.now() - t0) / 1000, peak });
      });
      res.on('error', (e) => { clearInterval(sampler); reject(e); });
    }).on('error', (e) => { clearInterval(sampler); reject(e); });
  });
}

async function main() {
  const bytes = segment(root, 'hd2s');
  const host = await startHost(root, 'download', { stream_retention: '0', idle_timeout: '30' });
  try {
    const session = newSession();
    const count = minutes * 30;
    const start = Date.now() - count * 2000;
    const agent = keepAlive(4);
    const t0 = performance.now();
    // Four uploads in flight, in order of seq.
    let next = 0;
    await Promise.all(Array.from({ length: 4 }, async () => {
      while (next < count) {
        const seq = next++;
        await mustPut(host.url, session, seq, bytes, { duration: 2, pdt: new Date(start + seq * 2000), agent });
      }
    }));
    const uploadSeconds = (performance.now() - t0) / 1000;
    await endStream(host.url, session);
    agent.destroy();
    await sleep(2000);
    const before = rssBytes(host.pid);
    const got = await download(`${host.url}/download/${session.id}.ts`, host.pid);
    await sleep(500);
    const after = rssBytes(host.pid);
    const expected = count * bytes.length;
    const growth = got.peak - before;
    const result = {
      mode: smoke ? 'smoke' : 'default',
      minutes, segments: count, segment_bytes: bytes.length, expected_bytes: expected,
      upload_seconds: uploadSeconds,
      status: got.status, downloaded_bytes: got.bytes, download_seconds: got.seconds,
      download_mib_per_s: got.bytes / MiB / got.seconds,
      rss_before_mib: before / MiB, rss_peak_mib: got.peak / MiB, rss_after_mib: after / MiB, rss_growth_mib: growth / MiB,
      verdict_every_byte: got.status === 200 && got.bytes === expected ? 'met' : 'missed',
      verdict_flat_memory: growth < FLAT_MIB * MiB ? 'met' : 'missed',
    };
    const dir = join(root, 'target', 'bench');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, `download-${result.mode}.json`), JSON.stringify(result, null, 2));
    console.log(`download of a ${minutes}-minute stream (${count} segments of ${(bytes.length / MiB).toFixed(2)} MiB, retention 0):`);
    console.log(`  uploaded in ${uploadSeconds.toFixed(1)} s; GET /download answered ${got.status}, ${(got.bytes / MiB).toFixed(1)} MiB of ${(expected / MiB).toFixed(1)} in ${got.seconds.toFixed(1)} s (${result.download_mib_per_s.toFixed(0)} MiB/s)`);
    console.log(`  host RSS: ${result.rss_before_mib.toFixed(1)} MiB before, peak ${result.rss_peak_mib.toFixed(1)} during (+${result.rss_growth_mib.toFixed(1)}), ${result.rss_after_mib.toFixed(1)} after`);
    console.log(`  every byte back: ${result.verdict_every_byte}; RSS growth under ${FLAT_MIB} MiB: ${result.verdict_flat_memory}`);
    if (result.verdict_every_byte !== 'met' || (!smoke && result.verdict_flat_memory !== 'met')) process.exitCode = 1;
  } finally {
    await host.stop();
  }
}

await main();
