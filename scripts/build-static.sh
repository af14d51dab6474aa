#!/usr/bin/env bash
# Builds the static heaptrace binary that the container image holds
# (glibc, statically linked, static-pie): target/static/heaptrace.
# The eBPF object is embedded as in every build. `--target` keeps the
# static flags away from build scripts and the eBPF sub-build.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --package heaptrace \
  --target x86_64-unknown-linux-gnu --target-dir target/static-build
mkdir -p target/static
cp target/static-build/x86_64-unknown-linux-gnu/release/heaptrace target/static/heaptrace
file target/static/heaptrace 2>/dev/null || true
