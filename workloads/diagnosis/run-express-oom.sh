#!/bin/bash
# Drive express-leak.js to V8's OOM with ab, as documented in README.md.
#   ./run-express-oom.sh [NODE_VERSION=22.23.3]
set -u
cd "$(dirname "$0")"
ver=${1:-22.23.3}
node=~/.cache/heaptrace/node/$ver/bin/node
base=results/express-leak-$ver-$(date +%Y%m%d-%H%M%S)
VERBOSE=1 "$node" --max-old-space-size=96 --trace-gc express-leak.js > "$base.out" 2> "$base.err" &
pid=$!
for _ in $(seq 50); do grep -q '^listening' "$base.out" 2>/dev/null && break; sleep 0.1; done
port=$(awk '/^listening/{print $2; exit}' "$base.out")
echo "pid $pid port $port"
ab -c 100 -n 1000 -k "http://127.0.0.1:$port/" > "$base.ab" 2>&1
wait "$pid"; rc=$?
echo "node exit status: $rc" | tee "$base.txt"
echo "ab: $(grep -E 'Complete requests|Failed requests|apr_|Total of' "$base.ab" | tr '\n' ' ')" | tee -a "$base.txt"
grep -m1 -E 'FATAL ERROR|heap out of memory' "$base.err" "$base.out" | tee -a "$base.txt"
sed -n '/Last few GCs/,/Last few JS stack\|JS stacktrace/p' "$base.err" "$base.out" | tee -a "$base.txt"
echo "mark-compacts: $(grep -c 'Mark-Compact' "$base.out")" | tee -a "$base.txt"
