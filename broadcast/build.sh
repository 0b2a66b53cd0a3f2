#!/bin/sh
# Assembles the broadcast page into broadcast/dist/, which spin.toml mounts read-only at
# /broadcast (the component serves it from there: too big to embed): the page's Rust
# (chalkstream-broadcast over the shared pipeline, wasm-bindgen), our static files, and
# ffmpeg.wasm vendored from the root node_modules (never a CDN). Files are only rewritten when
# they change, so their ETags (size and modification time) stay put across rebuilds.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
FF=node_modules/@ffmpeg/ffmpeg/dist/esm
CORE=node_modules/@ffmpeg/core/dist/esm
[ -f "$FF/index.js" ] && [ -f "$CORE/ffmpeg-core.wasm" ] || npm ci --no-audit --no-fund --loglevel=error

put() { # put SOURCE DEST: copy SOURCE to DEST unless identical
  cmp -s "$1" "$2" 2>/dev/null || cp "$1" "$2"
}
PATH="$HOME/.cargo/bin:$PATH"
command -v wasm-bindgen >/dev/null 2>&1 || {
  echo "wasm-bindgen CLI not found: cargo install wasm-bindgen-cli --version 0.2.130 (scripts/setup does)" >&2; exit 1; }
cargo build --release --target wasm32-unknown-unknown -p chalkstream-broadcast

dist=broadcast/dist
mkdir -p "$dist/vendor/ffmpeg" "$dist/vendor/core" "$dist/pkg"
out=$(mktemp -d)
wasm-bindgen --target web --no-typescript --out-dir "$out" target/wasm32-unknown-unknown/release/chalkstream_broadcast.wasm
for f in "$out"/*; do put "$f" "$dist/pkg/$(basename "$f")"; done
rm -rf "$out"
for f in broadcast/static/*; do put "$f" "$dist/$(basename "$f")"; done
for f in "$FF"/*.js; do put "$f" "$dist/vendor/ffmpeg/$(basename "$f")"; done
# (the @ffmpeg packages ship no LICENSE file; they are MIT, and the core is GPL-2.0-or-later as built with x264: see their package.json)
put "$CORE/ffmpeg-core.js" "$dist/vendor/core/ffmpeg-core.js"
put "$CORE/ffmpeg-core.wasm" "$dist/vendor/core/ffmpeg-core.wasm"
echo "broadcast: $dist"
