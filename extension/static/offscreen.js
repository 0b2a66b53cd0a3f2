// Offscreen document loader: the recorder, segmenter and upload queue live in Rust.
import init, { offscreen_main, on_offscreen_message } from './pkg/chalkstream_extension.js';

await init({ module_or_path: new URL('./pkg/chalkstream_extension_bg.wasm', import.meta.url) });
chrome.runtime.onMessage.addListener((msg, _sender, respond) => {
  if (msg?.to !== 'offscreen') return false;
  on_offscreen_message(msg).then(respond, (e) => respond({ error: String(e) }));
  return true;
});
await offscreen_main();
