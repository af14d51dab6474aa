#!/usr/bin/env bash
# Builds a minimal container rootfs for running a node binary under podman+runc
# without any image registry (the privileged container integration test):
#
#   scripts/container-rootfs.sh NODE_BINARY OUT_DIR
#   e.g. scripts/container-rootfs.sh ~/.cache/heaptrace/node/22.23.3/bin/node target/rootfs-22
#
# OUT_DIR gets: /usr/bin/node, every library `ldd` lists (at the same absolute
# path, dynamic loader included), empty /tmp /proc /sys /dev, an /etc with
# passwd (root) and group, and workloads/{gc-heavy,leak}.js and
# workloads/diagnosis/{buffer-leak,churn}.js under /app.
# Also installs podman and runc (Debian packages) when missing.
# Idempotent: OUT_DIR is built in a temporary sibling and swapped in.
#
# Run it with:
#   podman --runtime /usr/sbin/runc --cgroup-manager cgroupfs run --rm -i \
#     --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
#     --rootfs OUT_DIR /usr/bin/node --trace-gc /app/gc-heavy.js
set -euo pipefail

log() { printf '[container-rootfs] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ $# -eq 2 ] || die "usage: $0 NODE_BINARY OUT_DIR"
node_bin=$1
out=$2
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

[ -x "$node_bin" ] || die "not an executable: $node_bin"
for w in gc-heavy.js leak.js diagnosis/buffer-leak.js diagnosis/churn.js; do
  [ -f "$repo/workloads/$w" ] || die "missing $repo/workloads/$w"
done

# podman + runc (crun, podman's default, refuses this machine's hybrid cgroups).
if ! command -v podman >/dev/null 2>&1 || [ ! -x /usr/sbin/runc ]; then
  log "installing podman and runc"
  DEBIAN_FRONTEND=noninteractive apt-get install -y podman runc >&2
fi

# Absolute, normalised output path; refuse anything that looks like a system dir.
mkdir -p "$(dirname "$out")"
out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
case "$out" in
  / | /usr | /usr/* | /etc | /etc/* | /lib* | /bin* | /sbin* | /proc* | /sys* | /dev*)
    die "refusing to use $out as a rootfs dir" ;;
esac
# A container still running on this rootfs may have mounts under it.
if findmnt -rn -o TARGET | grep -qF -- "$out/"; then
  die "something is mounted under $out (a container still running?)"
fi

tmp="$out.tmp.$$"
trap 'rm -rf --one-file-system -- "$tmp"' EXIT
rm -rf --one-file-system -- "$tmp"
mkdir -p "$tmp"/{usr/bin,tmp,proc,sys,dev,etc,app,root}
chmod 1777 "$tmp/tmp"

cp -L -- "$node_bin" "$tmp/usr/bin/node"
chmod 755 "$tmp/usr/bin/node"

# ldd lines: "libx.so => /path/libx.so (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)",
# "linux-vdso.so.1 (0x...)" (kernel-provided, skipped).
ldd_out=$(ldd "$node_bin") || die "ldd failed on $node_bin (not dynamically linked?)"
libs=$(awk '$2 == "=>" && $3 ~ /^\// { print $3; next } $1 ~ /^\// { print $1 }' <<<"$ldd_out" | sort -u)
[ -n "$libs" ] || die "ldd listed no libraries for $node_bin"
while IFS= read -r lib; do
  mkdir -p "$tmp$(dirname "$lib")"
  cp -L -- "$lib" "$tmp$lib"
  log "lib $lib"
done <<<"$libs"

printf 'root:x:0:0:root:/root:/bin/sh\n' >"$tmp/etc/passwd"
printf 'root:x:0:\n' >"$tmp/etc/group"

cp -- "$repo/workloads/gc-heavy.js" "$repo/workloads/leak.js" "$repo/workloads/diagnosis/buffer-leak.js" "$repo/workloads/diagnosis/churn.js" "$tmp/app/"

rm -rf --one-file-system -- "$out"
mv -- "$tmp" "$out"
trap - EXIT
log "rootfs ready: $out"
