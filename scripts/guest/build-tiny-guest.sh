#!/bin/sh
# Build quorate's tiny test guest: a Debian cloud kernel plus a busybox
# initramfs whose init writes an increasing counter to /dev/vda (with fsync)
# and prints "counter N" on ttyS0.  See scripts/guest/README.md.
#
# Usage: build-tiny-guest.sh [OUTDIR]      (default: <repo>/target/guest)
# Env:   GUEST_KERNEL_VERSION=6.1.0-...    pick a kernel under /lib/modules
#        GUEST_FORCE=1                     rebuild even when up to date
#
# Needs only Debian packages: linux-image-cloud-amd64 (or any linux-image with
# modules), busybox-static, cpio (busybox's cpio is used when cpio is missing),
# gzip.  Prints the output directory on success.  Idempotent: when the outputs
# are newer than every input it only prints the directory.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$repo/target/guest}

die() { echo "build-tiny-guest: $*" >&2; exit 1; }

# ---- locate inputs -------------------------------------------------------
if [ -n "${GUEST_KERNEL_VERSION:-}" ]; then
    kver=$GUEST_KERNEL_VERSION
else
    # Prefer a cloud kernel (small, serial console built in), newest first.
    kver=$(ls /boot 2>/dev/null | sed -n 's/^vmlinuz-\(.*-cloud-amd64\)$/\1/p' | sort -V | tail -n1)
    [ -n "$kver" ] || kver=$(ls /boot 2>/dev/null | sed -n 's/^vmlinuz-\(.*\)$/\1/p' | sort -V | tail -n1)
fi
[ -n "$kver" ] || die "no kernel in /boot; install it: apt-get install linux-image-cloud-amd64"
kernel=/boot/vmlinuz-$kver
moddir=/lib/modules/$kver
[ -r "$kernel" ] || die "$kernel is missing or unreadable (run as root, or apt-get install linux-image-cloud-amd64)"
[ -r "$moddir/modules.dep" ] || die "$moddir/modules.dep missing; reinstall the kernel package (apt-get install --reinstall linux-image-$kver)"

busybox=""
for b in /bin/busybox /usr/bin/busybox; do
    if [ -x "$b" ] && file -L "$b" 2>/dev/null | grep -q 'statically linked'; then busybox=$b; break; fi
    if [ -x "$b" ] && ! command -v file >/dev/null 2>&1; then busybox=$b; break; fi
done
[ -n "$busybox" ] || die "a static busybox is needed: apt-get install busybox-static"
if command -v cpio >/dev/null 2>&1; then cpio="cpio"; else cpio="$busybox cpio"; fi
command -v gzip >/dev/null 2>&1 || die "gzip is needed: apt-get install gzip"

# ---- up to date? --------------------------------------------------------
stamp="$out/guest.stamp"
want="kernel=$kver $(stat -c '%s:%Y' "$kernel" "$moddir/modules.dep" | tr '\n' ' ')script=$(cksum < "$0" | cut -d' ' -f1) busybox=$(cksum < "$busybox" | cut -d' ' -f1)"
if [ -z "${GUEST_FORCE:-}" ] && [ -f "$stamp" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ] \
   && [ "$(cat "$stamp")" = "$want" ]; then
    echo "$out"
    exit 0
fi

mkdir -p "$out"
work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
root=$work/root
mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys" "$root/lib/modules" "$root/etc/acpi/PWRF" "$root/tmp"

cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done

# ---- modules in dependency order (from modules.dep) ---------------------
# modules.dep lines: "kernel/x/a.ko: kernel/y/b.ko kernel/z/c.ko"; modprobe
# loads the dependency list right to left, then the module itself.
order=$work/order
: > "$order"
add_mod() { # $1 = path relative to $moddir
    grep -qxF "$1" "$order" && return 0
    deps=$(grep -m1 "^$1:" "$moddir/modules.dep" | cut -d: -f2-) || true
    rev=""
    for d in $deps; do rev="$d $rev"; done
    for d in $rev; do add_mod "$d"; done
    echo "$1" >> "$order"
}
for name in virtio_pci virtio_blk virtio_net button evdev pvpanic-mmio; do
    rel=$(grep -E "(^|/)$name\.ko(\.[a-z]+)?:" "$moddir/modules.dep" | head -n1 | cut -d: -f1) || true
    if [ -z "$rel" ]; then
        # built into the kernel: nothing to load
        grep -qE "/$name\.ko" "$moddir/modules.builtin" 2>/dev/null && continue
        case $name in virtio_net|button|evdev|pvpanic-mmio) continue ;; esac
        die "module $name not found for kernel $kver"
    fi
    add_mod "$rel"
done
: > "$root/etc/modules"
while read -r rel; do
    base=$(basename "$rel")
    case $base in
        *.ko) cp "$moddir/$rel" "$root/lib/modules/$base" ;;
        *.ko.xz) xz -dc "$moddir/$rel" > "$root/lib/modules/${base%.xz}"; base=${base%.xz} ;;
        *.ko.zst) zstd -qdc "$moddir/$rel" > "$root/lib/modules/${base%.zst}"; base=${base%.zst} ;;
        *.ko.gz) gzip -dc "$moddir/$rel" > "$root/lib/modules/${base%.gz}"; base=${base%.gz} ;;
        *) die "unknown module format $rel" ;;
    esac
    echo "$base" >> "$root/etc/modules"
done < "$order"

# ---- ACPI power button -> clean poweroff --------------------------------
cat > "$root/etc/acpi/PWRF/00000080" <<'SH'
#!/bin/sh
echo "guest: power button, powering off"
sync
poweroff -f
SH
chmod +x "$root/etc/acpi/PWRF/00000080"

# ---- init ---------------------------------------------------------------
cat > "$root/init" <<'SH'
#!/bin/sh
# quorate tiny guest: persistent counter on /dev/vda, reported on ttyS0.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1

echo "guest: init started"
for m in $(cat /etc/modules); do
    insmod "/lib/modules/$m" || echo "guest: insmod $m failed"
done
# The power button's event device appears shortly after the modules load.
i=0
while [ ! -e /dev/input/event0 ] && [ $i -lt 100 ]; do usleep 20000; i=$((i + 1)); done
acpid -c /etc/acpi -l /dev/null || echo "guest: acpid failed, the power button will be ignored"

# Kernel arguments: counter_ms=N (step interval, default 100),
# guest_ip=ADDR/PREFIX (address of eth0, default none),
# panic_at=N (the kernel panics right after printing counter N; for tests).
interval=100
guest_ip=""
panic_at=""
for arg in $(cat /proc/cmdline); do
    case $arg in
        counter_ms=*) interval=${arg#counter_ms=} ;;
        panic_at=*) panic_at=${arg#panic_at=} ;;
        guest_ip=*) guest_ip=${arg#guest_ip=} ;;
    esac
done
ip link set lo up 2>/dev/null
if [ -n "$guest_ip" ]; then
    i=0
    while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do usleep 20000; i=$((i + 1)); done
    if ip link set eth0 up && ip addr add "$guest_ip" dev eth0; then
        echo "guest: eth0 $guest_ip"
    else
        echo "guest: cannot configure eth0 with $guest_ip"
    fi
fi

i=0
while [ ! -b /dev/vda ]; do
    i=$((i + 1))
    if [ $i -gt 300 ]; then echo "guest: no /dev/vda, counter disabled"; break; fi
    usleep 20000
done

# Record at byte 0 of /dev/vda: "QUORATE-COUNTER <n> END\n", zero padded to 512.
n=0
if [ -b /dev/vda ]; then
    set -- $(dd if=/dev/vda bs=512 count=1 2>/dev/null | tr -d '\000')
    if [ "${1:-}" = QUORATE-COUNTER ] && [ "${3:-}" = END ]; then
        case $2 in ''|*[!0-9]*) n=0 ;; *) n=$2 ;; esac
    fi
    echo "resumed from $n"
fi

while :; do
    n=$((n + 1))
    if [ -b /dev/vda ]; then
        printf 'QUORATE-COUNTER %d END\n' "$n" \
            | dd of=/dev/vda bs=512 count=1 conv=sync,notrunc,fsync 2>/dev/null \
            || echo "guest: write of counter $n failed"
    fi
    echo "counter $n"
    if [ "$n" = "$panic_at" ]; then
        echo "guest: panicking at counter $n"
        echo c > /proc/sysrq-trigger
    fi
    usleep $((interval * 1000))
done
SH
chmod +x "$root/init"

(cd "$root" && find . | LC_ALL=C sort | $cpio -o -H newc --quiet 2>/dev/null) | gzip -1 > "$work/initrd.img"
cp "$kernel" "$work/vmlinuz"
mv -f "$work/vmlinuz" "$out/vmlinuz"
mv -f "$work/initrd.img" "$out/initrd.img"
cat > "$out/cmdline" <<'TXT'
console=ttyS0 panic=-1 quiet rdinit=/init
TXT
echo "$want" > "$stamp"
echo "$out"
