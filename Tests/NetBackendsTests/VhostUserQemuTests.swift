import Foundation
import Testing

/// A real guest kernel's virtio-net driver through QEMU's vhost-user netdev: QEMU hands
/// the guest's queues to `netbe connect vhost-user,socket=... tap0,...`, the guest pings
/// the namespace behind the tap and downloads a file whose SHA-256 must match. QEMU 7.2
/// under TCG needs `vectors=0` on the device, and vhost-user needs guest RAM in a shared
/// memory backend.
@Suite(.serialized) struct VhostUserQemuTests {
    static let guestSettings = ["vmip=10.78.0.2/24", "vmpeer=10.78.0.1", "vmport=8000", "vmfile=blob"]
    static let memory = ["-object", "memory-backend-memfd,id=mem,size=256M,share=on", "-numa", "node,memdev=mem"]

    static func bootGuest(_ guest: QemuGuest, socket: String) throws {
        try guest.boot(netdev: "vhost-user,id=n0,chardev=c0", vm: guestSettings,
                       extra: memory + ["-chardev", "socket,id=c0,path=\(socket),reconnect=1"], device: ",vectors=0")
    }

    /// Ping and a sha256-checked download; then the guest powers off (QEMU goes away).
    static func expectTraffic(_ guest: QemuGuest, _ server: HTTPFileServer, label: String) throws {
        let wall = try guest.wait(for: "VM-PING", seconds: 120)
        try guest.wait(for: "VM-DONE", seconds: 120)
        print("boot-to-ping \(label): guest uptime \(guest.line("VM-PING") ?? "?") s, wall \(String(format: "%.2f", wall)) s (QEMU TCG)")
        #expect(guest.line("VM-PING-OK") != nil, "three pings answered:\n\(guest.serial.suffix(2000))")
        #expect(guest.line("VM-SHA256") == server.sha256, "the guest downloaded the file whole:\n\(guest.serial.suffix(2000))")
        try guest.waitExit()
    }

    /// One netbe serves two QEMUs one after the other: the first is killed (SIGKILL) once
    /// its guest answered a ping, in the middle of its traffic; its mappings are released
    /// and the second QEMU is served without restarting netbe. Offloads: the guest accepts
    /// checksum and TSO both ways, and the download reaches it in GSO super-frames.
    @Test(.timeLimit(.minutes(5))) func qemuGuestPingsAndDownloadsThroughVhostUser() throws {
        let ns = try TestNamespace("vu")
        let sock = TestSocketPath("vu")
        let netbe = try NetbeBinary.start(["connect", "vhost-user,socket=\(sock.path)", "tap0,netns=\(ns.name)"])
        try ns.address("tap0", "10.78.0.1/24")
        let server = try HTTPFileServer(in: ns, bind: "10.78.0.1", bytes: 2 << 20)
        let first = try QemuGuest()
        try Self.bootGuest(first, socket: sock.path)
        try first.wait(for: "VM-PING", seconds: 120)
        _ = try first.process?.stop(SIGKILL)
        let second = try QemuGuest()
        try Self.bootGuest(second, socket: sock.path)
        try Self.expectTraffic(second, server, label: "vhost-user, second QEMU")
        #expect(try netbe.stop() == 0)
        let counters = try NetbeBinary.counters(netbe.stdout)
        let toGuest = counters.first { ($0["to"] as? String)?.hasPrefix("/") == true }
        #expect((toGuest?["bytes"] as? Int ?? 0) > 2 << 20, "the download crossed into the guest: \(counters)")
        #expect((toGuest?["gso_frames"] as? Int ?? 0) > 0, "the tap's TCP reached the guest in GSO frames: \(counters)")
        for feature in ["CSUM", "GUEST_CSUM", "GUEST_TSO4", "HOST_TSO4", "MRG_RXBUF", "VERSION_1"] {
            #expect(netbe.stderr.contains(feature), "the guest accepted \(feature):\n\(netbe.stderr.suffix(2000))")
        }
        #expect(netbe.stderr.contains("guest memory"), "netbe logged the memory table:\n\(netbe.stderr.suffix(2000))")
    }

    /// A guest that declines offloads (QEMU `guest_csum=off,guest_tso4=off,guest_tso6=off`)
    /// while the tap behind netbe was granted them: the tap's TSO super-frames are cut and
    /// checksummed on their way to the guest (`sw_segmented`), none is dropped for an
    /// offload the guest cannot take, and the download arrives whole.
    @Test(.timeLimit(.minutes(5))) func aGuestDecliningOffloadsGetsCutFrames() throws {
        let ns = try TestNamespace("vuc")
        let sock = TestSocketPath("vuc")
        let netbe = try NetbeBinary.start(["connect", "vhost-user,socket=\(sock.path)", "tap0,netns=\(ns.name)"])
        try ns.address("tap0", "10.78.0.1/24")
        let server = try HTTPFileServer(in: ns, bind: "10.78.0.1", bytes: 2 << 20)
        let guest = try QemuGuest()
        try guest.boot(netdev: "vhost-user,id=n0,chardev=c0", vm: Self.guestSettings,
                       extra: Self.memory + ["-chardev", "socket,id=c0,path=\(sock.path),reconnect=1"],
                       device: ",vectors=0,guest_csum=off,guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off")
        try Self.expectTraffic(guest, server, label: "vhost-user, guest without offloads")
        #expect(try netbe.stop() == 0)
        let counters = try NetbeBinary.counters(netbe.stdout)
        let toGuest = try #require(counters.first { ($0["to"] as? String)?.hasPrefix("/") == true }, "\(counters)")
        let drops = toGuest["drops"] as? [String: Any] ?? [:]
        #expect((toGuest["sw_segmented"] as? Int ?? 0) > 0, "the tap's super-frames were cut for the guest: \(toGuest)")
        #expect(drops["offload_unsupported"] as? Int ?? 0 == 0, "frames dropped for offloads the guest declined: \(toGuest)")
    }

    /// User-mode networking for a vhost-user guest: `netbe connect vhost-user,... slirp`.
    /// The guest gets its lease from libslirp, pings the gateway and downloads a file from
    /// the host's loopback whose SHA-256 must match; the slirp side's offloads (its TSO
    /// cut and joined in software) reach the guest as negotiated features.
    @Test(.timeLimit(.minutes(5))) func qemuGuestGetsALeaseThroughSlirp() throws {
        let server = try LoopbackHTTPServer(bytes: 2 << 20)
        let sock = TestSocketPath("vus")
        let netbe = try NetbeBinary.start(["connect", "vhost-user,socket=\(sock.path)", "slirp"])
        let guest = try QemuGuest()
        try guest.boot(netdev: "vhost-user,id=n0,chardev=c0",
                       vm: ["vmip=dhcp", "vmpeer=10.0.2.2", "vmport=\(server.port)", "vmfile=\(server.fileName)"],
                       extra: Self.memory + ["-chardev", "socket,id=c0,path=\(sock.path),reconnect=1"], device: ",vectors=0")
        try guest.wait(for: "VM-DONE", seconds: 120)
        let want = String(try sh("sha256sum", server.directory.appendingPathComponent(server.fileName).path).prefix(64))
        #expect(guest.line("VM-DHCP")?.hasPrefix("10.0.2.15") == true, "DHCP lease from slirp:\n\(guest.serial.suffix(2000))")
        #expect(guest.line("VM-SHA256") == want, "the guest fetched the file whole:\n\(guest.serial.suffix(2000))")
        try guest.waitExit()
        #expect(try netbe.stop() == 0, "netbe stderr: \(netbe.stderr.suffix(2000))")
        let counters = try NetbeBinary.counters(netbe.stdout)
        #expect(counters.map { $0["bytes"] as? Int ?? 0 }.max() ?? 0 > 2 << 20, "the file crossed netbe: \(counters)")
    }

    /// netbe killed under a running guest and started again: QEMU (`reconnect=1`) comes back,
    /// sets the rings up from the indices it holds, and the guest's traffic goes on. The tap
    /// is persistent, so that its address and the HTTP server outlive the first netbe.
    @Test(.timeLimit(.minutes(3))) func netbeRestartedUnderARunningGuest() throws {
        let ns = try TestNamespace("vur")
        try ns.run("ip", "tuntap", "add", "tap0", "mode", "tap", "vnet_hdr")
        let sock = TestSocketPath("vur")
        var netbe = try NetbeBinary.start(["connect", "vhost-user,socket=\(sock.path)", "tap0,netns=\(ns.name)"])
        try ns.address("tap0", "10.78.0.1/24")
        let server = try HTTPFileServer(in: ns, bind: "10.78.0.1", bytes: 2 << 20)
        let guest = try QemuGuest()
        try Self.bootGuest(guest, socket: sock.path)
        try guest.wait(for: "VM-READY", seconds: 120)
        _ = try netbe.stop(SIGKILL)
        netbe = try NetbeBinary.start(["connect", "vhost-user,socket=\(sock.path)", "tap0,netns=\(ns.name)"])
        try Self.expectTraffic(guest, server, label: "vhost-user, netbe restarted")
        #expect(try netbe.stop() == 0)
        #expect(netbe.stderr.contains("guest memory"), "QEMU reconnected to the second netbe:\n\(netbe.stderr.suffix(2000))")
    }
}
