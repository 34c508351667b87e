#!/usr/bin/env bash
# Installs the Debian packages quorate's tests and demo use. Idempotent: does
# nothing when every package is already installed.
#   iproute2 nftables       network namespaces, veth, bridges, cutting links in multi-node tests
#   qemu-system-x86 qemu-utils  real guests (vm crate, demo), qemu-img as an NBD client
#   libnbd-bin nbdkit       real NBD clients (nbdinfo, nbdcopy) and a reference NBD server
#   fence-agents openipmi ipmitool  fence_ipmilan against ipmi_sim
#   resource-agents         OCF agents (ocf:heartbeat:Dummy, IPaddr2)
#   linux-image-cloud-amd64 busybox-static cpio  the tiny test guest (kernel + busybox initramfs)
#   e2fsprogs util-linux procps psmisc  loop-device filesystems, process-tree checks
set -euo pipefail
PACKAGES=(iproute2 nftables qemu-system-x86 qemu-utils libnbd-bin nbdkit fence-agents openipmi ipmitool
  resource-agents linux-image-cloud-amd64 busybox-static cpio e2fsprogs util-linux procps psmisc)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "quorate needs these Debian packages: ${missing[*]}" >&2
  echo "run as root (sudo $0), or: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The whole list, not only the missing ones: apt resolves them together, so
# installing one cannot silently remove another (seen once: qemu-utils went
# missing after qemu-system-x86 was installed on its own).
apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
still=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || still+=("$p")
done
if [ ${#still[@]} -ne 0 ]; then
  echo "install-deps: still not installed after apt-get install: ${still[*]}" >&2
  exit 1
fi
