//! Part 7, key-value reads per request (issue 11): runs spin-app's `bounds` test (reads and operations per
//! request kind at 10, 600 and 3600 segments, both retention modes, and the floods) and the property test's
//! generator over HTTP against the bundled host for `cfg.reads.propertySecs`, and keeps what they print.

import { execFileSync, spawn } from 'node:child_process';
import { dirname } from 'node:path';

export const BOUNDS_CMD = 'cargo test --release -p chalkstream-spin-app --test bounds -- --nocapture';
export const propertyCmd = (secs) => `${secs > 0 ? `CHALKSTREAM_PROPERTY_SECS=${secs} ` : ''}cargo test --release -p chalkstream-host --test property_http -- --nocapture`;

/**
 * The workspace's test executables by target name. `--workspace` as scripts/test builds them, so nothing is
 * rebuilt after it (`-p` alone can unify features differently and compile wasmtime again).
 */
function testExecutables(root, log) {
  log('  reads: cargo test --release --workspace --no-run (builds the tests if scripts/test has not)');
  const out = execFileSync('cargo', ['test', '--release', '--workspace', '--no-run', '--message-format=json'], {
    cwd: root, encoding: 'utf8', maxBuffer: 512 * 1024 * 1024, stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exes = {};
  for (const line of out.split('\n')) {
    if (!line.startsWith('{')) continue;
    const m = JSON.parse(line);
    if (m.reason === 'compiler-artifact' && m.executable && m.profile?.test) {
      exes[m.target.name] = { exe: m.executable, cwd: dirname(m.manifest_path) };
    }
  }
  for (const name of ['bounds', 'property_http']) {
    if (!exes[name]) throw new Error(`cargo built no test executable named ${name}`);
  }
  return exes;
}

/** Runs a test executable with `--nocapture`; resolves with everything it printed, rejects when it fails. */
function runTest({ exe, cwd }, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(exe, ['--nocapture'], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(out);
      else reject(new Error(`${exe} exited with ${code}: ${out.split('\n').filter((l) => /panicked|FAILED|failed/.test(l)).slice(0, 5).join(' | ') || out.slice(-800)}`));
    });
  });
}

/** The JSON after `prefix` on each line that starts with it. */
const jsonLines = (out, prefix) => out.split('\n').filter((l) => l.startsWith(prefix)).map((l) => JSON.parse(l.slice(prefix.length)));

/** Run part 7. */
export async function runReads({ root, cfg, log }) {
  const exes = testExecutables(root, log);
  const t0 = performance.now();
  const bounds = await runTest(exes.bounds, {});
  const rows = jsonLines(bounds, 'bounds-row: ');
  if (rows.length !== 6) throw new Error(`the bounds test printed ${rows.length} rows, not 6`);
  const [flood] = jsonLines(bounds, 'bounds-flood: ');
  const [backlog] = jsonLines(bounds, 'bounds-backlog: ');
  log(`  reads: bounds test passed in ${((performance.now() - t0) / 1000).toFixed(1)} s (${rows.length} rows)`);

  // 0 seconds: the fixed seed's 8 cases, exactly as scripts/test runs it (a few seconds of random cases
  // may list too little to check).
  const secs = cfg.reads.propertySecs;
  const t1 = performance.now();
  const prop = await runTest(exes.property_http, secs > 0 ? { CHALKSTREAM_PROPERTY_SECS: String(secs) } : {});
  const m = prop.match(/property over HTTP: (\d+) cases, (\d+) playlists checked \(seed (0x[0-9a-f]+)\) in (\S+)/);
  if (!m) throw new Error(`property_http printed no summary: ${prop.slice(-400)}`);
  const property = {
    cases: Number(m[1]), playlists_checked: Number(m[2]), seed: m[3], took: m[4], failed: 0,
    seconds: Math.round((performance.now() - t1) / 1000), cmd: propertyCmd(secs),
  };
  log(`  reads: property over HTTP: ${property.cases} cases tried, none failed (${property.playlists_checked} playlists checked, ${property.took})`);
  return { cmd: BOUNDS_CMD, rows, flood, backlog, property };
}

/** The section of BENCHMARKS.md for part 7. */
export function renderReads(R) {
  const pair = (x) => (x ? `${x[0]} / ${x[1]}` : 'n/a');
  let s = `
Every request's key-value work is bounded by a constant plus what its answer carries (issue 11;
ARCHITECTURE.md, "Bounded walks", states the bounds and the test asserts them). Counted on the memory
store by \`${R.cmd}\`: segments of 2 s uploaded in order, one every 2 s, then one request of each kind.
Each cell is **reads / all operations** (reads, writes and deletes); \`PUT\` is the worst upload of the
run. A 10-minute sliding window of 2 s segments lists 300; an \`EVENT\` playlist (retention 0) lists
everything, from stored blocks of lines.

| retention | segments | listed | PUT (worst) | playlist | status | chunk | end | ended playlist |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
`;
  for (const r of R.rows) {
    s += `| ${r.retention} | ${r.segments} | ${r.listed} | ${pair(r.put)} | ${pair(r.playlist)} | ${pair(r.status)} | ${pair(r.chunk)} | ${pair(r.end)} | ${pair(r.ended_playlist)} |\n`;
  }
  if (R.flood) {
    s += `
The in-order flood (same command): ${R.flood.segments} segments of 0.1 s inside a 10-minute window list the
newest ${R.flood.listed} (\`MAX_WINDOW_SEGMENTS\`): a playlist GET costs ${pair(R.flood.playlist)}, the status
${pair(R.flood.status)}, the worst upload ${pair(R.flood.put)}, and ${R.flood.stored} segments stay stored.`;
    if (R.backlog) {
      s += ` After 11 minutes with no request (all of it expired) and one new upload, a playlist GET lists
${R.backlog.listed} segment for ${pair(R.backlog.playlist)} (one retention batch of the expired backlog per request).`;
    }
    s += '\n';
  }
  const P = R.property;
  if (P) {
    s += `
The property test's generator over HTTP against the bundled host (random v1 or v2 interleavings, reads
checked for both sequences, acknowledged segments and their bytes): **${P.cases} cases tried, none failed**
(${P.playlists_checked} playlists checked, seed ${P.seed}, ${P.took}). Command: \`${P.cmd}\`.
`;
  }
  return s;
}
