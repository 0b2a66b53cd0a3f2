// Firefox ESR (Debian's firefox-esr) driven over WebDriver BiDi, with just the commands the
// tests use: navigate, evaluate. A fresh profile with fake camera and microphone, allowed
// without a prompt. No driver package: BiDi is a WebSocket that Firefox itself serves.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const WS = globalThis.WebSocket ?? (await import('undici')).WebSocket;

/** Resolves to `{ version, pid, preload(source), navigate(url), evaluate(expression), close() }`. */
export async function launchFirefox() {
  const profile = mkdtempSync(join(tmpdir(), 'chalkstream-firefox-'));
  writeFileSync(join(profile, 'user.js'), [
    'user_pref("media.navigator.streams.fake", true);',
    'user_pref("media.navigator.permission.disabled", true);',
    'user_pref("remote.active-protocols", 1);',
    // Script clicks are no user gesture: let sound and Web Audio start without one.
    'user_pref("media.autoplay.default", 0);',
    'user_pref("media.autoplay.block-webaudio", false);',
    'user_pref("browser.shell.checkDefaultBrowser", false);',
    'user_pref("datareporting.policy.dataSubmissionEnabled", false);',
  ].join('\n'));
  const child = spawn('firefox-esr', ['--headless', '--no-remote', '--profile', profile, '--remote-debugging-port', '0'],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  const close = async () => {
    if (child.exitCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    rmSync(profile, { recursive: true, force: true });
  };
  try {
    const url = await new Promise((resolve, reject) => {
      let seen = '';
      const timer = setTimeout(() => reject(new Error(`Firefox offered no WebDriver BiDi within 60 s: ${seen}`)), 60_000);
      const look = (d) => {
        seen += d;
        const m = seen.match(/WebDriver BiDi listening on (ws:\/\/\S+)/);
        if (m) { clearTimeout(timer); resolve(m[1]); }
      };
      child.stdout.on('data', look);
      child.stderr.on('data', look);
      child.on('error', (e) => { clearTimeout(timer); reject(e); });
    });
    const ws = new WS(`${url}/session`);
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
    let next = 0;
    const pending = new Map();
    ws.onmessage = (e) => {
      const m = JSON.parse(e.data);
      if (m.id !== undefined && pending.has(m.id)) { pending.get(m.id)(m); pending.delete(m.id); }
    };
    const send = (method, params) => new Promise((resolve, reject) => {
      const id = ++next;
      pending.set(id, (m) => (m.type === 'error' ? reject(new Error(`${method}: ${m.error} ${m.message}`)) : resolve(m.result)));
      ws.send(JSON.stringify({ id, method, params }));
    });
    const session = await send('session.new', { capabilities: {} });
    const { contexts } = await send('browsingContext.getTree', {});
    const context = contexts[0].context;
    return {
      version: session.capabilities.browserVersion,
      /** The browser's process (its content processes descend from it). */
      pid: child.pid,
      /** Runs `source` in every document before its own scripts (BiDi `script.addPreloadScript`). */
      preload: (source) => send('script.addPreloadScript', { functionDeclaration: `() => { ${source} }` }),
      navigate: (target) => send('browsingContext.navigate', { context, url: target, wait: 'complete' }),
      /** The value of `expression` (awaited when a promise), as plain JSON through `JSON.stringify`.
       *  It runs as a user's gesture would (`userActivation`), so a `click()` in it is what a real
       *  click is to the page: allowed to open the screen-sharing dialog, say. */
      async evaluate(expression) {
        const r = await send('script.evaluate', { target: { context }, awaitPromise: true, userActivation: true,
          expression: `(async () => JSON.stringify(await (${expression})))()` });
        if (r.type === 'exception') throw new Error(`evaluate: ${r.exceptionDetails?.text}`);
        return JSON.parse(r.result.value ?? 'null');
      },
      close: async () => { try { await send('session.end', {}); } catch {} ws.close(); await close(); },
    };
  } catch (e) {
    await close();
    throw e;
  }
}
