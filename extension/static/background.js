// Service worker loader: registers listeners synchronously and forwards to Rust.
import init, { on_action_clicked, on_worker_message } from './pkg/chalkstream_extension.js';

const ready = init({ module_or_path: new URL('./pkg/chalkstream_extension_bg.wasm', import.meta.url) });

chrome.action.onClicked.addListener((tab) => {
  ready.then(() => on_action_clicked(tab)).catch((e) => console.error('chalkstream:', e));
});

chrome.runtime.onMessage.addListener((msg, _sender, respond) => {
  if (msg?.to !== 'worker') return false;
  ready.then(() => on_worker_message(msg)).then(respond, (e) => respond({ error: String(e) }));
  return true;
});
