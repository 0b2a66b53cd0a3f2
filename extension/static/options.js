// Options page loader.
import init, { options_main } from './pkg/chalkstream_extension.js';

await init({ module_or_path: new URL('./pkg/chalkstream_extension_bg.wasm', import.meta.url) });
options_main();
