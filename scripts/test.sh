#!/usr/bin/env bash
# Sets up a fresh machine (as root) and runs heaptrace's whole test suite:
# formatting, clippy, unit tests, and the privileged integration tests that
# load the real eBPF programs and trace real processes (C workloads and node).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/fetch-node.sh   # Node 18-26 and Debian's 18, for the GC tests (cached)
export PATH="$HOME/.cargo/bin:$PATH"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --release --all-targets -- -D warnings

echo "== eBPF crate clippy"
# The kernel crate is not a default member (it only builds for BPF); lint it
# for the BPF target through the same toolchain.
# aya-build passes --cfg bpf_target_arch; do the same here.
(cd heaptrace-ebpf && RUSTC_BOOTSTRAP=1 \
  RUSTFLAGS="--cfg=bpf_target_arch=\"$(uname -m)\"" \
  cargo clippy --release --target bpfel-unknown-none -Z build-std=core \
  --target-dir ../target/ebpf-clippy -- -D warnings)

echo "== tests (unit + privileged integration, one at a time)"
# Privileged tests attach real programs; running them one at a time keeps
# their processes and figures apart. --no-fail-fast: every test binary runs,
# so the totals below count them all. (The deploy test rebuilds the static
# binary the container image holds when the sources changed.)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --release --no-fail-fast --workspace --exclude heaptrace-ebpf --lib --bins --tests -- --test-threads=1 2>&1 | tee "$log"

# One closing line with the totals over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
