// Popup loader.
import init, { popup_main } from './pkg/chalkstream_extension.js';

await init({ module_or_path: new URL('./pkg/chalkstream_extension_bg.wasm', import.meta.url) });
popup_main();
