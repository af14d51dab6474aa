#!/bin/bash
# Run one workload under --trace-gc for SECONDS, then kill it and analyze.
#   ./run.sh WORKLOAD SECONDS [NODE_VERSION=22.23.3] [extra node flags...]
# Extra env (e.g. MEDIUM_KB_S=...) passes through. VERBOSE=1 is always set.
# Logs: results/<workload>-<version>-<timestamp>.{out,err}; summary: .txt
set -u
cd "$(dirname "$0")"
name=${1%.js}; secs=$2; ver=${3:-22.23.3}; shift 2; [ $# -gt 0 ] && shift
node=~/.cache/heaptrace/node/$ver/bin/node
base=results/$name-$ver-$(date +%Y%m%d-%H%M%S)
echo "cmd: VERBOSE=1 $node --trace-gc $* $name.js  (run ${secs}s)" > "$base.txt"
VERBOSE=1 "$node" --trace-gc "$@" "$name.js" > "$base.out" 2> "$base.err" &
pid=$!
sleep "$secs"
kill "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
"$node" analyze.js "$base" "${WARMUP:-30}" "$secs" >> "$base.txt"
cat "$base.txt"
