import Foundation
import Testing

/// A real guest kernel's virtio-net driver, through QEMU's socket netdevs, joined by
/// netbe to a tap in a namespace: the guest pings the namespace and downloads a file
/// from it, and the SHA-256 the guest prints must match the file's.
@Suite(.serialized) struct QemuGuestTests {
    static let guestSettings = ["vmip=10.77.0.2/24", "vmpeer=10.77.0.1", "vmport=8000", "vmfile=blob"]

    /// Boots, checks ping and download, prints the boot-to-ping time.
    func runGuest(_ guest: QemuGuest, netdev: String, server: () throws -> HTTPFileServer, label: String,
                  afterBoot: () throws -> Void = {}) throws {
        try guest.boot(netdev: netdev, vm: Self.guestSettings)
        try afterBoot()
        let wall = try guest.wait(for: "VM-PING")
        try guest.wait(for: "VM-DONE")
        let uptime = guest.line("VM-PING") ?? "?"
        print("boot-to-ping \(label): guest uptime \(uptime) s, wall \(String(format: "%.2f", wall)) s (QEMU TCG)")
        #expect(guest.line("VM-PING-OK") != nil, "three pings answered:\n\(guest.serial.suffix(2000))")
        #expect(guest.line("VM-SHA256") == (try server().sha256), "the guest downloaded the file whole:\n\(guest.serial.suffix(2000))")
        try guest.waitExit()
    }

    @Test func qemuStreamClientOfNetbeListener() throws {
        let ns = try TestNamespace("qs")
        let sock = TestSocketPath("qs")
        let netbe = try NetbeBinary.start(["connect", "stream,listen=unix:\(sock.path)", "tap0,netns=\(ns.name)"])
        try ns.address("tap0", "10.77.0.1/24")
        let server = try HTTPFileServer(in: ns, bind: "10.77.0.1")
        let guest = try QemuGuest()
        try runGuest(guest, netdev: "stream,id=n0,server=off,addr.type=unix,addr.path=\(sock.path)", server: { server }, label: "stream")
        #expect(try netbe.stop() == 0)
        let counters = try NetbeBinary.counters(netbe.stdout)
        // The file crossed towards the guest: at least its size in bytes on that direction.
        let toGuest = counters.first { ($0["to"] as? String)?.hasPrefix("unix:") == true }
        #expect((toGuest?["bytes"] as? Int ?? 0) > 4 << 20, "\(counters)")
    }

    @Test func qemuDgramOverUnixSockets() throws {
        let ns = try TestNamespace("qd")
        let ours = TestSocketPath("qdn"), theirs = TestSocketPath("qdq")
        let netbe = try NetbeBinary.start(["connect", "dgram,local=unix:\(ours.path),remote=unix:\(theirs.path)", "tap0,netns=\(ns.name)"])
        try ns.address("tap0", "10.77.0.1/24")
        let server = try HTTPFileServer(in: ns, bind: "10.77.0.1")
        let guest = try QemuGuest()
        try runGuest(guest, netdev: "dgram,id=n0,local.type=unix,local.path=\(theirs.path),remote.type=unix,remote.path=\(ours.path)",
                     server: { server }, label: "dgram")
        #expect(try netbe.stop() == 0)
    }

    @Test func netbeClientOfQemuStreamServer() throws {
        let ns = try TestNamespace("qc")
        let sock = TestSocketPath("qc")
        let server = try HTTPFileServerOnTap(ns)
        let guest = try QemuGuest()
        var netbe: TestProcess?
        try runGuest(guest, netdev: "stream,id=n0,server=on,addr.type=unix,addr.path=\(sock.path)", server: { try server.http }, label: "stream server=on") {
            try waitUntil(30, "QEMU's listening socket") { FileManager.default.fileExists(atPath: sock.path) }
            netbe = try NetbeBinary.start(["connect", "stream,connect=unix:\(sock.path)", "tap0,netns=\(ns.name)"])
            try server.configure()
        }
        // QEMU powered off: the peer left and netbe (without reconnect=) ends with status 1.
        #expect(try netbe?.wait(seconds: 10) == 1)
        #expect(netbe?.stderr.contains("reconnect= is not set") == true)
    }
}

/// For tests where the tap appears only once netbe runs: the HTTP server starts then.
final class HTTPFileServerOnTap {
    let ns: TestNamespace
    private var server: HTTPFileServer?
    init(_ ns: TestNamespace) throws { self.ns = ns }

    func configure() throws {
        try ns.address("tap0", "10.77.0.1/24")
        server = try HTTPFileServer(in: ns, bind: "10.77.0.1")
    }

    var http: HTTPFileServer {
        get throws {
            guard let server else { throw TestFailure("the HTTP server was not started") }
            return server
        }
    }
}
