#!/usr/bin/env bash
# Fuzzes the recording reader (heaptrace/src/recording/reader.rs) for a
# bounded time, growing the kept corpus in fuzz/corpus/recording_reader.
#   bash scripts/fuzz.sh [seconds=300]
# The test suite replays that corpus (recording::tests) without cargo-fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
seconds=${1:-300}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# The kernel programs are not what is fuzzed: skip their BPF build (its
# sub-cargo would get the sanitizer flags). cargo-fuzz needs nightly
# flags; RUSTC_BOOTSTRAP allows them on the pinned toolchain.
export AYA_BUILD_SKIP=1 RUSTC_BOOTSTRAP=1
cd fuzz
# -rss_limit_mb: the reader's bounds (64 MiB per chunk compressed, 256 MiB
# decompressed) must hold; -max_len 1 MiB keeps runs fast.
cargo fuzz run recording_reader corpus/recording_reader -- \
  -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=1048576 -print_final_stats=1
# Keep the corpus small: only inputs that add coverage.
cargo fuzz cmin recording_reader corpus/recording_reader >/dev/null 2>&1 || true
