#!/bin/sh
# Assembles the viewer's files into player/dist/, which spin-app embeds: our
# sources plus hls.js vendored from the npm registry (root node_modules, never
# a CDN), and VERSION, a digest of them all that pages put in asset URLs so
# browsers may cache assets for a year. Files are only rewritten when they
# change, so an unchanged player does not force spin-app to rebuild.
set -eu
cd "$(dirname "$0")/.."
[ -f node_modules/hls.js/dist/hls.min.js ] || npm ci --no-audit --no-fund --loglevel=error

dist=player/dist
mkdir -p "$dist"
put() { # put SOURCE NAME: copy SOURCE to dist/NAME unless identical
  cmp -s "$1" "$dist/$2" 2>/dev/null || cp "$1" "$dist/$2"
}
for f in player/src/*; do put "$f" "$(basename "$f")"; done
# Drop the source-map comment: the map is not shipped, so browsers should not ask for it.
sed '$ s|^//# sourceMappingURL=.*$||' node_modules/hls.js/dist/hls.min.js > "$dist/.hls.min.js.tmp"
put "$dist/.hls.min.js.tmp" hls.min.js
rm -f "$dist/.hls.min.js.tmp"
put node_modules/hls.js/LICENSE hls.js.LICENSE.txt

version=$(cd "$dist" && ls | grep -vx VERSION | sort | xargs cat | sha1sum | cut -c1-12)
printf '%s' "$version" > "$dist/.VERSION.tmp"
put "$dist/.VERSION.tmp" VERSION
rm -f "$dist/.VERSION.tmp"
echo "player: $dist (version $version)"
