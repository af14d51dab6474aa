#!/usr/bin/env bash
# Regenerates docs/example/: a recording of the bundled leaking service
# (workloads/leak.js, as scripts/demo.sh runs it, but with V8's old
# generation capped at 64 MiB so that it dies of its leak within the
# recording and the report has a death to show), and the HTML report made
# from that recording with `heaptrace report --html`. As root.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet --package heaptrace
node=${NODE:-$HOME/.cache/heaptrace/node/22.23.3/bin/node}
mkdir -p docs/example
"$node" --max-old-space-size=64 workloads/leak.js 600 5 >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
sleep 1
# Until the process has died (at most 5 minutes).
./target/release/heaptrace --pid "$pid" --duration 300s -o json \
  --record docs/example/leak-demo.htrec >/dev/null
chmod 0644 docs/example/leak-demo.htrec   # an example to share, unlike a real one
./target/release/heaptrace report docs/example/leak-demo.htrec --html docs/example/leak-demo.html
ls -l docs/example/
