//! Starts the real component in the bundled test host for one benchmark part, its per-request log in a file.
//!
//! Like tests/e2e/lib/server.mjs, but the host's stderr (one line per request) goes to
//! target/bench/host-<name>.log instead of the terminal, so a wrk run does not flood the output.

import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, openSync, closeSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Start the host with Spin variables `env` (by name; none inherited from this process) and, in
 * `hostEnv`, environment for the host itself (e.g. `CHALKSTREAM_COUNT_KV`); `args` go to the host
 * (e.g. `--runtime-config-file`). Resolves to `{ url, pid, log, db, stop() }`: `db` is the SQLite
 * file of its default store; stop() removes its state. `bin` runs another build of the host (an A/B
 * run against an older commit's, with this checkout's component); so does CHALKSTREAM_HOST_BIN, for a whole bench part.
 */
export async function startHost(root, name, env = {}, hostEnv = {}, args = [], bin = null) {
  const stateDir = mkdtempSync(join(tmpdir(), 'chalkstream-bench-state-'));
  mkdirSync(join(root, 'target', 'bench'), { recursive: true });
  const log = join(root, 'target', 'bench', `host-${name}.log`);
  const fd = openSync(log, 'w');
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SPIN_VARIABLE_')));
  const vars = Object.fromEntries(Object.entries(env).map(([k, v]) => [`SPIN_VARIABLE_${k.toUpperCase()}`, String(v)]));
  const child = spawn(bin || process.env.CHALKSTREAM_HOST_BIN || join(root, 'target', 'release', 'chalkstream-host'),
    ['--listen', '127.0.0.1:0', '--state-dir', stateDir, '--spin-toml', join(root, 'spin.toml'), ...args],
    { env: { ...inherited, ...hostEnv, ...vars }, stdio: ['ignore', 'pipe', fd] });
  closeSync(fd);
  const exited = new Promise((r) => child.once('exit', r));
  const url = await new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`the host did not start within 60 s; see ${log}`)), 60_000);
    child.stdout.on('data', (d) => {
      buf += d;
      const m = buf.match(/listening on (http:\/\/[\d.:]+)/);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    exited.then((code) => { clearTimeout(timer); reject(new Error(`the host exited with ${code}; see ${log}`)); });
  });
  child.stdout.resume();
  return {
    url, pid: child.pid, log, db: join(stateDir, 'sqlite_key_value.db'),
    async stop() {
      if (child.exitCode === null) { child.kill('SIGTERM'); await exited; }
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}
