import Foundation
import Testing

/// Issue 4's end-to-end case: a real guest kernel, through QEMU's `-netdev stream`, served
/// by netbe's user-mode network running as an unprivileged user. The guest gets its
/// address by DHCP from libslirp, pings the gateway and downloads a file from a server
/// on the host's loopback (10.0.2.2 is the host), whose SHA-256 must match.
@Suite(.serialized) struct SlirpGuestTests {
    @Test(arguments: [true, false])
    func qemuGuestOnlineThroughSlirp(helper: Bool) throws {
        try requireRoot()   // to start netbe as nobody and hand it a socket directory
        let server = try LoopbackHTTPServer(bytes: 2 << 20)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("nbt-sg-\(getpid())-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try sh("chmod", "1777", dir.path)
        let sock = dir.appendingPathComponent("vm.sock").path
        let netbe = try TestProcess(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", try NetbeBinary.path,
                                     "connect", "slirp,helper=\(helper ? "on" : "off")", "stream,listen=unix:\(sock)"])
        try netbe.waitForLine("ready")
        let guest = try QemuGuest()
        try guest.boot(netdev: "stream,id=n0,server=off,addr.type=unix,addr.path=\(sock)",
                       vm: ["vmip=dhcp", "vmpeer=10.0.2.2", "vmport=\(server.port)", "vmfile=\(server.fileName)"])
        try guest.wait(for: "VM-DONE")
        let want = String(try sh("sha256sum", server.directory.appendingPathComponent(server.fileName).path).prefix(64))
        #expect(guest.line("VM-DHCP")?.hasPrefix("10.0.2.15") == true, "DHCP lease from slirp:\n\(guest.serial.suffix(2000))")
        #expect(guest.line("VM-SHA256") != nil && guest.line("VM-SHA256") == want,
                "the guest fetched the file whole:\n\(guest.serial.suffix(2000))")
        try guest.waitExit()
        #expect(try netbe.stop() == 0, "netbe stderr: \(netbe.stderr)")
        let counters = try NetbeBinary.counters(netbe.stdout)
        #expect(counters.count == 2)
        #expect(counters.map { $0["bytes"] as? Int ?? 0 }.max() ?? 0 > 2 << 20, "the file crossed netbe: \(counters)")
    }
}
