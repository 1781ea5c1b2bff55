import Foundation

/// A real Linux guest for socket-transport tests: the Debian kernel with a busybox
/// initramfs whose /init loads virtio-net, configures eth0 from the kernel command line,
/// pings its peer, downloads a file over HTTP and prints the file's SHA-256, then powers
/// off. QEMU runs with `-accel tcg` (this host's /dev/kvm cannot run stock kernels).
///
/// Serial lines the guest prints: `VM-READY <uptime>`, `VM-PING <uptime>` (first answered
/// ping), `VM-PING-OK`, `VM-SHA256 <hex>`, `VM-DONE`.
final class QemuGuest {
    /// Modules the Debian kernel needs for virtio-net, in load order (as ../shared/peers/mkinitrd.sh).
    static let modules = ["virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
                          "virtio_pci", "failover", "net_failover", "virtio_net"]

    static let initScript = """
    #!/bin/busybox sh
    /bin/busybox --install -s
    mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
    for m in \(modules.joined(separator: " ")); do insmod /lib/modules/$m.ko 2>/dev/null; done
    vmip=dhcp; vmpeer=10.77.0.1; vmport=8000; vmfile=blob
    for a in $(cat /proc/cmdline); do case $a in vm*=*) eval "$a";; esac; done
    ip link set lo up
    for i in $(seq 250); do [ -e /sys/class/net/eth0 ] && break; usleep 20000; done
    ip link set eth0 up
    if [ "$vmip" = dhcp ]; then udhcpc -i eth0 -n -q -t 10 -T 1 -s /udhcpc.sh; else ip addr add $vmip dev eth0; fi
    echo "VM-READY $(cut -d' ' -f1 /proc/uptime)"
    for i in $(seq 60); do ping -c 1 -W 1 $vmpeer >/dev/null 2>&1 && { echo "VM-PING $(cut -d' ' -f1 /proc/uptime)"; break; }; done
    ping -c 3 -i 0.2 -W 2 $vmpeer | grep -q ' 0% packet loss' && echo VM-PING-OK
    wget -q -O /tmp/f http://$vmpeer:$vmport/$vmfile && echo "VM-SHA256 $(sha256sum /tmp/f | cut -d' ' -f1)"
    echo "VM-DONE $(cut -d' ' -f1 /proc/uptime)"
    poweroff -f
    """

    static let dhcpScript = """
    #!/bin/sh
    case "$1" in bound|renew)
      ip addr flush dev $interface; ip addr add $ip/${mask:-24} dev $interface
      [ -n "$router" ] && ip route add default via ${router%% *} dev $interface
      echo "VM-DHCP $ip router=$router";;
    esac
    exit 0
    """

    let workDirectory: URL
    let kernel: String
    let initrd: String
    private(set) var process: TestProcess?
    private(set) var startedAt = Date()

    /// Builds the initramfs in a fresh temporary directory (removed on deinit).
    init() throws {
        try requireTool("qemu-system-x86_64", package: "qemu-system-x86")
        try requireTool("busybox", package: "busybox-static")
        guard let k = try FileManager.default.contentsOfDirectory(atPath: "/boot").filter({ $0.hasPrefix("vmlinuz-") }).sorted().last else {
            throw TestFailure("no /boot/vmlinuz-*: apt-get install -y linux-image-amd64")
        }
        kernel = "/boot/\(k)"
        let version = String(k.dropFirst("vmlinuz-".count))
        workDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("nbt-guest-\(getpid())-\(UUID().uuidString.prefix(6))")
        let root = workDirectory.appendingPathComponent("root")
        for d in ["bin", "proc", "sys", "dev", "tmp", "lib/modules"] {
            try FileManager.default.createDirectory(at: root.appendingPathComponent(d), withIntermediateDirectories: true)
        }
        let busybox = ["/bin/busybox", "/usr/bin/busybox"].first { FileManager.default.fileExists(atPath: $0) }!
        try FileManager.default.copyItem(atPath: busybox, toPath: root.appendingPathComponent("bin/busybox").path)
        for m in Self.modules {
            let file = try sh("modinfo", "-k", version, "-n", m).trimmingCharacters(in: .whitespacesAndNewlines)
            let out = root.appendingPathComponent("lib/modules/\(m).ko").path
            if file.hasSuffix(".ko.xz") {
                try sh("sh", "-c", "xz -dc '\(file)' > '\(out)'")
            } else if file.hasSuffix(".ko.zst") {
                try sh("sh", "-c", "zstd -qdc '\(file)' > '\(out)'")
            } else {
                try FileManager.default.copyItem(atPath: file, toPath: out)
            }
        }
        try Self.initScript.write(to: root.appendingPathComponent("init"), atomically: true, encoding: .utf8)
        try Self.dhcpScript.write(to: root.appendingPathComponent("udhcpc.sh"), atomically: true, encoding: .utf8)
        try sh("chmod", "+x", root.appendingPathComponent("init").path, root.appendingPathComponent("udhcpc.sh").path)
        initrd = workDirectory.appendingPathComponent("initrd.cpio.gz").path
        try sh("sh", "-c", "cd '\(root.path)' && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 > '\(initrd)'")
    }

    deinit {
        process = nil   // kills QEMU by PID
        try? FileManager.default.removeItem(at: workDirectory)
    }

    /// Boots the guest with `netdev` (a `-netdev` value with id=n0). `vm` holds the
    /// guest's settings: vmip=CIDR|dhcp, vmpeer=IP, vmport=, vmfile=.
    /// `extra` goes before the netdev (vhost-user: a shared memory backend), `device`
    /// options are appended to the virtio-net-pci device.
    func boot(netdev: String, vm: [String], extra: [String] = [], device: String = "") throws {
        let append = (["console=ttyS0", "quiet", "panic=-1"] + vm).joined(separator: " ")
        startedAt = Date()
        process = try TestProcess([
            "qemu-system-x86_64", "-accel", "tcg,thread=multi", "-m", "256", "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none", "-serial", "file:\(serialLog.path)",
            "-no-reboot", "-kernel", kernel, "-initrd", initrd, "-append", append,
        ] + extra + [
            "-netdev", netdev, "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,romfile=" + device,
        ])
    }

    var serialLog: URL { workDirectory.appendingPathComponent("serial.log") }
    var serial: String { (try? String(contentsOf: serialLog, encoding: .utf8))?.replacingOccurrences(of: "\r", with: "") ?? "" }

    /// The words after `tag` on the guest's first line starting with it.
    func line(_ tag: String) -> String? {
        serial.split(separator: "\n").first { $0.hasPrefix(tag + " ") || $0 == tag }
            .map { String($0.dropFirst(tag.count)).trimmingCharacters(in: .whitespaces) }
    }

    /// Waits for `tag` on the serial console; returns the wall seconds since boot.
    @discardableResult
    func wait(for tag: String, seconds: Double = 180) throws -> Double {
        try waitUntil(seconds, "\(tag) from the guest") {
            if line(tag) != nil { return true }
            if let p = process, !p.isRunning {
                throw TestFailure("QEMU exited \(p.process.terminationStatus) before \(tag): \(p.stderr)\nserial:\n\(serial.suffix(3000))")
            }
            return false
        }
        return Date().timeIntervalSince(startedAt)
    }

    /// Waits for QEMU to exit (the guest powers off after VM-DONE).
    func waitExit(seconds: Double = 60) throws {
        if let p = process { _ = try p.wait(seconds: seconds) }
    }
}

/// A directory served over HTTP by `python3 -m http.server` inside a namespace, holding
/// `blob`: `bytes` random bytes whose SHA-256 is `sha256`.
final class HTTPFileServer {
    let directory: URL
    let sha256: String
    let server: TestProcess

    init(in ns: TestNamespace, bind ip: String, port: Int = 8000, bytes: Int = 4 << 20) throws {
        try requireTool("python3", package: "python3")
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("nbt-http-\(getpid())-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let blob = directory.appendingPathComponent("blob").path
        try sh("sh", "-c", "head -c \(bytes) /dev/urandom > '\(blob)'")
        sha256 = String(try sh("sha256sum", blob).prefix(64))
        server = try ns.spawn(["python3", "-m", "http.server", String(port), "--bind", ip, "--directory", directory.path])
        try waitUntil(10, "the HTTP server in \(ns.name)") {
            (try? ns.run("python3", "-c", "import socket; socket.create_connection(('\(ip)', \(port)), 1)")) != nil
        }
    }

    deinit {
        _ = try? server.stop(SIGKILL)
        try? FileManager.default.removeItem(at: directory)
    }
}
