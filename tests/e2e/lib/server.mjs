// Starts the real Chalkstream component in the bundled test host on a free
// loopback port with its own state directory, for the browser tests.
import { spawn } from 'node:child_process';
import { mkdtempSync, openSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const HOST_BIN = join(ROOT, 'target', 'release', 'chalkstream-host');

/**
 * Start the host. `env` holds Spin variables by name, e.g. `{ idle_timeout: '5' }`.
 * `listen` defaults to a free port; pass the old `url`'s address to restart on
 * the same one. Resolves to `{ url, stateDir, stop(), restart() }`.
 */
export async function startServer({ env = {}, stateDir, listen = '127.0.0.1:0' } = {}) {
  stateDir ??= mkdtempSync(join(tmpdir(), 'chalkstream-state-'));
  const vars = Object.fromEntries(
    Object.entries(env).map(([k, v]) => [`SPIN_VARIABLE_${k.toUpperCase()}`, String(v)]));
  const child = spawn(HOST_BIN, ['--listen', listen, '--state-dir', stateDir,
    '--spin-toml', join(ROOT, 'spin.toml')], {
    // The request log goes to a file in the state dir, so test output stays readable.
    env: { ...process.env, ...vars },
    stdio: ['ignore', 'pipe', openSync(join(stateDir, 'host.log'), 'a')],
  });
  const url = await new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error('host did not start within 60 s')), 60_000);
    child.stdout.on('data', (d) => {
      buf += d;
      const m = buf.match(/listening on (http:\/\/[\d.:]+)/);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`host exited with ${code}`)); });
  });
  child.stdout.resume();
  const stop = () => new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
  const restart = async () => {
    await stop();
    return startServer({ env, stateDir, listen: new URL(url).host });
  };
  return { url, stateDir, stop, restart, process: child };
}
