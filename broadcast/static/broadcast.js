// Broadcast page loader: the capture, segmenter and upload queue live in Rust (the pipeline the
// extension runs too).
import init, { broadcast_main } from './pkg/chalkstream_broadcast.js';

await init({ module_or_path: new URL('./pkg/chalkstream_broadcast_bg.wasm', import.meta.url) });
broadcast_main();
