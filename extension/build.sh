#!/bin/sh
# Builds the unpacked extension into extension/dist/: the Rust logic (wasm-bindgen), the
# static pages and loaders, and ffmpeg.wasm vendored from node_modules (never a CDN).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
EXT="$ROOT/extension"
DIST="$EXT/dist"
PATH="$HOME/.cargo/bin:$PATH"

command -v wasm-bindgen >/dev/null 2>&1 || {
  echo "wasm-bindgen CLI not found: cargo install wasm-bindgen-cli --version 0.2.130" >&2; exit 1; }
FF="$ROOT/node_modules/@ffmpeg/ffmpeg/dist/esm"
CORE="$ROOT/node_modules/@ffmpeg/core/dist/esm"
[ -f "$FF/index.js" ] && [ -f "$CORE/ffmpeg-core.wasm" ] || {
  echo "ffmpeg.wasm not installed: run 'npm ci' at the repository root" >&2; exit 1; }

cd "$ROOT"
cargo build --release --target wasm32-unknown-unknown -p chalkstream-extension
rm -rf "$DIST"
mkdir -p "$DIST/pkg" "$DIST/vendor/ffmpeg" "$DIST/vendor/core"
wasm-bindgen --target web --no-typescript --out-dir "$DIST/pkg" \
  "$ROOT/target/wasm32-unknown-unknown/release/chalkstream_extension.wasm"
cp -R "$EXT/static/." "$DIST/"
for f in "$FF"/*.js; do cp "$f" "$DIST/vendor/ffmpeg/"; done
cp "$CORE/ffmpeg-core.js" "$CORE/ffmpeg-core.wasm" "$DIST/vendor/core/"
cp "$ROOT/node_modules/@ffmpeg/ffmpeg/LICENSE"* "$DIST/vendor/ffmpeg/" 2>/dev/null || true
echo "extension/dist ready: load it unpacked from chrome://extensions (Developer mode)."
