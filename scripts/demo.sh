#!/usr/bin/env bash
# Sets up a fresh machine (as root), builds heaptrace, starts a bundled Node
# service that leaks (workloads/leak.js), traces it live for 60 s and prints
# what heaptrace found.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet --package heaptrace

node workloads/leak.js 90 5 &
NODE_PID=$!
trap 'kill $NODE_PID 2>/dev/null || true' EXIT
sleep 1

echo
echo "== sudo heaptrace --pid $NODE_PID --duration 60s --interval 5s"
./target/release/heaptrace --pid "$NODE_PID" --duration 60s --interval 5s
