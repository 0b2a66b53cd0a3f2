//! Runs Debian's `wrk` against a URL for a bounded time and returns requests/s, latency percentiles and errors.

import { execFile } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const SCRIPT = join(dirname(fileURLToPath(import.meta.url)), 'wrk-report.lua');

/**
 * `wrk -t threads -c connections -d seconds` on `url`. Resolves to
 * `{ rps, mbps, p50_ms, p90_ms, p99_ms, max_ms, requests, errors, cmd }`; `errors` sums
 * connect/read/write/timeout errors and non-2xx/3xx answers.
 */
export function wrk(url, { threads = 2, connections = 16, seconds = 5 } = {}) {
  const args = ['-t', String(threads), '-c', String(connections), '-d', `${seconds}s`,
    '--timeout', '5s', '-s', SCRIPT, url];
  const cmd = `wrk ${args.join(' ').replace(SCRIPT, 'bench/lib/wrk-report.lua')}`;
  return new Promise((resolve, reject) => {
    execFile('wrk', args, { timeout: (seconds + 30) * 1000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`wrk failed: ${err.message} ${stderr}`));
      const line = stdout.split('\n').find((l) => l.startsWith('WRK_JSON '));
      if (!line) return reject(new Error(`wrk printed no summary: ${stdout} ${stderr}`));
      const j = JSON.parse(line.slice('WRK_JSON '.length));
      const secs = j.duration_us / 1e6;
      const e = j.errors;
      resolve({
        rps: j.requests / secs,
        mbps: j.bytes / secs / 1048576,
        p50_ms: j.p50_us / 1000,
        p90_ms: j.p90_us / 1000,
        p99_ms: j.p99_us / 1000,
        max_ms: j.max_us / 1000,
        requests: j.requests,
        errors: e.connect + e.read + e.write + e.timeout + e.status,
        cmd,
      });
    });
  });
}
