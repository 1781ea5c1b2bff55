#!/usr/bin/env bash
# The main job, on a fresh machine: a VM gets its address by DHCP from netbe's user-mode
# network (the slirp backend) and fetches a page from a web server on the host's
# loopback; netbe runs without root.
#
#   QEMU guest (virtio-net) --stream unix socket--> netbe connect slirp stream,listen=...
#                                                   `-> libslirp helper --> 127.0.0.1:PORT
#
# Usage: scripts/demo-slirp.sh
#   DEMO_NETDEV=qemu-user  boots the same guest on QEMU's own -netdev user instead of
#                          netbe (checks the guest side alone).
# Packages: scripts/packages.sh (installed when run as root on Debian; otherwise the
# script prints the one `apt-get install` line and exits 3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { printf 'demo: %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

. scripts/packages.sh
if [ "${DEMO_NETDEV:-netbe}" = qemu-user ]; then
    netbe_need_packages demo "${NETBE_DEMO_PACKAGES[@]}"
else
    netbe_need_swift demo
    netbe_need_packages demo "${NETBE_TOOLCHAIN_PACKAGES[@]}" "${NETBE_BUILD_PACKAGES[@]}" "${NETBE_DEMO_PACKAGES[@]}"
fi
kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)
[ -n "$kernel" ] || die "no kernel in /boot: apt-get install linux-image-amd64"
kver=${kernel#/boot/vmlinuz-}

work=$(mktemp -d /tmp/netbe-demo.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

say "building the guest's initramfs (busybox + virtio-net from kernel $kver)"
scripts/guest-initrd.sh "$work/guest.cpio.gz" "$kver" | sed 's/^/demo:   /'

# The page the guest fetches, served on the host's loopback only.
mkdir -p "$work/www"
echo "Hello from $(hostname) at $(date -u +%H:%M:%S): served on 127.0.0.1, reached through netbe's slirp" > "$work/www/index.html"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$work/www" "$port" >"$work/http.log" 2>&1 &
pids+=($!)
want=$(sha256sum "$work/www/index.html" | cut -d' ' -f1)
say "web server on the host: http://127.0.0.1:$port/index.html (sha256 ${want:0:16}...)"

netdev=()
if [ "${DEMO_NETDEV:-netbe}" = qemu-user ]; then
    say "DEMO_NETDEV=qemu-user: using QEMU's own user-mode network, not netbe"
    netdev=(-netdev user,id=n0)
else
    say "building netbe (swift build -c release)"
    swift build -c release --product netbe 2>&1 | tail -n 1 | sed 's/^/demo:   /'
    # A copy any user can run (the clone may live under a private home directory).
    install -m 755 "$(swift build -c release --show-bin-path)/netbe" "$work/netbe"
    "$work/netbe" backends | grep -q '^stream ' || die "this netbe has no stream backend yet (QEMU reaches netbe through it); try DEMO_NETDEV=qemu-user"
    run_as=()
    if [ "$(id -u)" = 0 ]; then
        # Root is not needed: run netbe as nobody from the start.
        run_as=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)
        chmod 1777 "$work"
    fi
    sock="$work/vm.sock"
    "${run_as[@]}" "$work/netbe" connect slirp "stream,listen=unix:$sock" >"$work/netbe.out" 2>"$work/netbe.err" &
    netbe=$!
    pids+=($netbe)
    for _ in $(seq 100); do grep -qx ready "$work/netbe.out" 2>/dev/null && break; kill -0 $netbe 2>/dev/null || break; sleep 0.1; done
    grep -qx ready "$work/netbe.out" || { cat "$work/netbe.err" >&2; die "netbe did not start"; }
    say "netbe is running as $(ps -o user= -p $netbe) (pid $netbe): slirp <-> unix socket $sock"
    helper=$(ps -o pid=,user=,args= --ppid $netbe | grep slirp-helper || true)
    [ -n "$helper" ] && say "libslirp runs in its helper process: $(echo $helper | cut -d' ' -f1-2)"
    netdev=(-netdev "stream,id=n0,server=off,addr.type=unix,addr.path=$sock")
fi

say "booting the guest (QEMU, TCG; about 5-10 s)"
timeout 180 qemu-system-x86_64 -accel tcg -m 256 -smp 1 -nodefaults -no-user-config -nographic \
    -serial stdio -no-reboot -kernel "$kernel" -initrd "$work/guest.cpio.gz" \
    -append "console=ttyS0 quiet panic=-1 netbe.url=http://10.0.2.2:$port/index.html" \
    "${netdev[@]}" -device virtio-net-pci,netdev=n0 2>&1 | tr -d '\r' | grep --line-buffered -o 'guest:.*' | tee "$work/guest.log" | sed 's/^/demo:   /'

lease=$(grep -o 'DHCP lease [^ ]*' "$work/guest.log" || true)
got=$(grep -o 'sha256 [0-9a-f]*' "$work/guest.log" | cut -d' ' -f2 || true)
if [ -n "${netbe:-}" ]; then
    kill -TERM "$netbe" 2>/dev/null || true
    wait "$netbe" 2>/dev/null || true
    say "netbe's counters:"
    sed 's/^/demo:   /' "$work/netbe.out" | grep '{' || true
fi
[ -n "$lease" ] || die "the guest got no DHCP lease"
[ "$got" = "$want" ] || die "the guest did not fetch the page intact (sha256 ${got:-none})"
say "OK: the guest got a ${lease#DHCP } and fetched the host's page intact (sha256 matches)"
