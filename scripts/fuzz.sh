#!/usr/bin/env bash
# Fuzzes the recording reader for a bounded time per target, growing the
# kept corpora in fuzz/corpus/<target>:
#   recording_reader  any bytes as a recording file (framing, checksums,
#                     zlib, the header);
#   recording_steps   any bytes as the steps inside valid chunks (the
#                     steps' parser, and the replay of arbitrary inputs
#                     through the model).
#   bash scripts/fuzz.sh [seconds per target=300]
# The test suite replays both corpora (recording::tests) without cargo-fuzz.
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
for target in recording_reader recording_steps; do
  # -rss_limit_mb: the reader's bounds (64 MiB per chunk compressed, 256 MiB
  # decompressed) must hold; -max_len 1 MiB keeps runs fast.
  cargo fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=1048576 -print_final_stats=1
  # Keep the corpus small: only inputs that add coverage, and of those,
  # beyond the seeds (seed-*) and past crashes (crash-*), none over 8 KiB.
  cargo fuzz cmin "$target" "corpus/$target"
  find "corpus/$target" -type f -size +8k ! -name 'seed-*' ! -name 'crash-*' -delete
done
