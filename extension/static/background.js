// Service worker loader: registers listeners synchronously and forwards to Rust.
import init, {
  on_action_clicked, on_worker_message, on_installed, on_menu_clicked, on_notification_clicked,
} from './pkg/chalkstream_extension.js';

const ready = init({ module_or_path: new URL('./pkg/chalkstream_extension_bg.wasm', import.meta.url) });

chrome.action.onClicked.addListener((tab) => {
  ready.then(() => on_action_clicked(tab)).catch((e) => console.error('chalkstream:', e));
});

// The right-click menu lives in Chrome; it is rebuilt from storage on install and start.
const rebuildMenus = () => ready.then(() => on_installed()).catch((e) => console.error('chalkstream:', e));
chrome.runtime.onInstalled.addListener(rebuildMenus);
chrome.runtime.onStartup.addListener(rebuildMenus);
// Tests call this to drive a menu entry: Chromium has no DevTools command for that menu.
globalThis.chalkstreamMenuClicked = (info, tab) => ready.then(() => on_menu_clicked(info, tab));
chrome.contextMenus.onClicked.addListener((info, tab) => {
  globalThis.chalkstreamMenuClicked(info, tab).catch((e) => console.error('chalkstream:', e));
});
chrome.notifications.onClicked.addListener(() => {
  ready.then(() => on_notification_clicked()).catch((e) => console.error('chalkstream:', e));
});

chrome.runtime.onMessage.addListener((msg, _sender, respond) => {
  if (msg?.to !== 'worker') return false;
  ready.then(() => on_worker_message(msg)).then(respond, (e) => respond({ error: String(e) }));
  return true;
});
