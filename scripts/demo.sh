#!/usr/bin/env bash
# The README's first command: the seed's two-node cluster on this machine,
# narrated: a service and a QEMU guest (the tiny guest of scripts/guest/,
# built from Debian's kernel and busybox), a live migration, a crash, fencing,
# recovery. Needs root (it builds network namespaces); installs the Debian
# packages it needs, builds quorate, and runs `quorate demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "the demo builds network namespaces and a power switch for its nodes: run it as root (sudo $0)" >&2
  exit 1
fi
bash scripts/install-deps.sh
echo "building quorate (first time: a few minutes)..." >&2
cargo build -q -p quorate
exec target/debug/quorate demo "$@"
