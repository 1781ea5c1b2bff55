#!/usr/bin/env bash
# Builds the demo guest's initramfs: busybox-static, the Debian kernel's virtio-net
# driver with its dependencies, and an /init that
#   1. loads the driver and brings eth0 up,
#   2. asks for an address by DHCP (busybox udhcpc) and prints what it got,
#   3. fetches the URL given as netbe.url=... on the kernel command line and prints its
#      size, sha256 and first line, then powers off.
# Every line the guest prints for the demo starts with "guest:".
#
# Usage: scripts/guest-initrd.sh OUTPUT.cpio.gz [KERNEL_VERSION]
# Needs: busybox-static, linux-image-amd64 (modules), kmod (modprobe), cpio or busybox.
set -euo pipefail
out=${1:?usage: $0 OUTPUT.cpio.gz [KERNEL_VERSION]}
kver=${2:-$(ls /lib/modules | sort -V | tail -n 1)}
busybox=/bin/busybox   # busybox-static's: a static binary runs in the bare initramfs
[ -x "$busybox" ] || { echo "guest-initrd: busybox is missing: apt-get install busybox-static" >&2; exit 1; }
[ -d "/lib/modules/$kver" ] || { echo "guest-initrd: no modules for kernel $kver: apt-get install linux-image-amd64" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,tmp,etc,modules}
cp "$busybox" "$root/bin/busybox"

# The driver and what it needs, in load order, as modprobe resolves them.
order=()
for top in virtio_pci virtio_net; do
    while read -r verb path _; do
        [ "$verb" = insmod ] || continue
        name=$(basename "$path"); name=${name%%.ko*}
        [[ " ${order[*]-} " == *" $name "* ]] && continue
        case "$path" in
            *.ko) cp "$path" "$root/modules/$name.ko" ;;
            *.ko.xz) xz -dc "$path" > "$root/modules/$name.ko" ;;
            *.ko.zst) zstd -qdc "$path" > "$root/modules/$name.ko" ;;
            *) echo "guest-initrd: cannot unpack $path" >&2; exit 1 ;;
        esac
        order+=("$name")
    done < <(modprobe --show-depends -S "$kver" "$top")
done
printf '%s\n' "${order[@]}" > "$root/modules/order"

cat > "$root/etc/lease.sh" <<'LEASE'
#!/bin/sh
# udhcpc calls this with the lease in the environment.
[ "$1" = bound ] || [ "$1" = renew ] || exit 0
ip addr add "$ip/$mask" dev "$interface"
[ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
echo "guest: DHCP lease $ip/$mask router ${router:-none} dns ${dns:-none} (from server $serverid)"
LEASE

cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do insmod /modules/$m.ko; done
url=
for word in $(cat /proc/cmdline); do
    case "$word" in netbe.url=*) url=${word#netbe.url=} ;; esac
done
ip link set lo up
n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 200 ]; do usleep 10000; n=$((n + 1)); done
ip link set eth0 up
echo "guest: eth0 $(cat /sys/class/net/eth0/address) is up, asking for an address by DHCP"
chmod +x /etc/lease.sh
if udhcpc -i eth0 -n -q -t 10 -T 1 -s /etc/lease.sh 2>/dev/null; then
    if [ -n "$url" ]; then
        if wget -q -O /tmp/page "$url"; then
            echo "guest: fetched $url: $(wc -c < /tmp/page) bytes, sha256 $(sha256sum /tmp/page | cut -d' ' -f1)"
            echo "guest: first line: $(head -n 1 /tmp/page)"
        else
            echo "guest: FAILED to fetch $url"
        fi
    fi
else
    echo "guest: FAILED: no DHCP lease"
fi
echo "guest: powering off"
poweroff -f
INIT
chmod +x "$root/init" "$root/etc/lease.sh"
(cd "$root" && find . | "$busybox" cpio -o -H newc 2>/dev/null | gzip -1) > "$out"
echo "guest-initrd: wrote $out ($(stat -c %s "$out") bytes; modules of $kver: ${order[*]})"
