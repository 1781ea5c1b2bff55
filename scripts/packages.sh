# The Debian 12 packages NetBackends needs, in one place. Sourced (not run) by
# scripts/demo-slirp.sh, scripts/test.sh and .ci/run:
#
#   . scripts/packages.sh
#   netbe_need_packages demo "${NETBE_BUILD_PACKAGES[@]}" "${NETBE_DEMO_PACKAGES[@]}"
#
# installs what is missing when run as root on Debian (apt-get update, apt-get install -y),
# otherwise prints the one `apt-get install` line and exits 3 ("unavailable on this host",
# the status netbe itself uses).

# What `swift build` needs beyond the Swift toolchain: libslirp and its pkg-config file.
NETBE_BUILD_PACKAGES=(libslirp-dev libglib2.0-dev pkg-config)
# What the toolchain links with and fetches dependencies with (its documented Debian 12
# dependencies that `swift build` and `swift test --sanitize` actually touch).
NETBE_TOOLCHAIN_PACKAGES=(git ca-certificates binutils libc6-dev libgcc-12-dev libstdc++-12-dev)
# scripts/demo-slirp.sh: a QEMU guest on a Debian kernel with a busybox initramfs.
NETBE_DEMO_PACKAGES=(qemu-system-x86 linux-image-amd64 busybox-static kmod xz-utils zstd python3 procps util-linux)
# The test suite: namespaces, taps, the kernel's tools and the peers it compares with.
NETBE_TEST_PACKAGES=(iproute2 iputils-ping iperf3 tcpdump ethtool python3 procps kmod xz-utils
    busybox-static qemu-system-x86 linux-image-amd64 passt vde2 slirp4netns
    dpdk-dev librte-net-vhost23 librte-mempool-ring23 librte-net-virtio23)

# Whether package $1 is installed. Without dpkg (not Debian) a probe per package stands in.
netbe_package_present() {
    if command -v dpkg-query >/dev/null 2>&1; then
        [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
        return
    fi
    case "$1" in
        libslirp-dev) pkg-config --exists slirp 2>/dev/null ;;
        libglib2.0-dev) pkg-config --exists glib-2.0 2>/dev/null ;;
        qemu-system-x86) command -v qemu-system-x86_64 >/dev/null ;;
        linux-image-amd64) ls /boot/vmlinuz-* >/dev/null 2>&1 ;;
        busybox-static) [ -x /bin/busybox ] ;;
        iproute2) command -v ip >/dev/null ;;
        iputils-ping) command -v ping >/dev/null ;;
        kmod) command -v modprobe >/dev/null ;;
        xz-utils) command -v xz >/dev/null ;;
        procps) command -v ps >/dev/null ;;
        util-linux) command -v setpriv >/dev/null ;;
        vde2) command -v vde_switch >/dev/null ;;
        binutils) command -v ld >/dev/null ;;
        ca-certificates) [ -d /etc/ssl/certs ] ;;
        lib*-dev) true ;;   # no portable probe; the build names what it misses
        *) command -v "$1" >/dev/null ;;
    esac
}

# netbe_need_packages WHO PACKAGE...: returns when every package is there (installing the
# missing ones as root on Debian); otherwise prints the install line and exits 3.
netbe_need_packages() {
    local who=$1; shift
    local missing=() p
    for p in "$@"; do
        [[ " ${missing[*]-} " == *" $p "* ]] && continue
        netbe_package_present "$p" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null; then
        printf '%s: installing %s\n' "$who" "${missing[*]}"
        netbe_apt_install "${missing[@]}"
        return
    fi
    printf '%s: missing system packages; as root run:\n  apt-get install -y %s\n' "$who" "${missing[*]}" >&2
    exit 3
}

# apt-get update, then install PACKAGE... (root, Debian).
netbe_apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Puts the toolchain on PATH (its usual place here) and checks for it.
netbe_need_swift() {
    [ -x /opt/swift/usr/bin/swift ] && PATH="/opt/swift/usr/bin:$PATH"
    command -v swift >/dev/null && return 0
    printf '%s: the Swift toolchain (6.1 or later) is missing: see https://www.swift.org/install/linux/\n' "$1" >&2
    exit 3
}
