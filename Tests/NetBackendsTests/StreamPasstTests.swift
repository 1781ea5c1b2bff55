import Foundation
import Testing

/// passt as the far end of a `stream,connect=` backend: passt serves a guest (here, a
/// namespace behind a tap) over its unix socket with QEMU's stream framing. The
/// namespace gets a DHCP lease from passt and reaches a TCP server in passt's own
/// namespace through the gateway address, which passt maps to its host's loopback.
@Suite(.serialized) struct StreamPasstTests {
    static let server = """
    import socket
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 8123)); s.listen(4); print("listening", flush=True)
    while True:
        c, a = s.accept(); c.sendall(b"hello-from-passt-namespace\\n"); c.close()
    """

    @Test func passtGivesALeaseAndATCPConnection() throws {
        try requireTool("passt", package: "passt")
        try requireTool("busybox", package: "busybox-static")
        try requireTool("python3", package: "python3")
        // passt's namespace (10.98.0.2, default route to an upstream namespace) and ours.
        let passtNS = try TestNamespace("pp")
        let upstream = try TestNamespace("pu")
        let ns = try TestNamespace("pg")
        try sh("ip", "link", "add", "p0", "netns", passtNS.name, "type", "veth", "peer", "name", "u0", "netns", upstream.name)
        try passtNS.address("p0", "10.98.0.2/24")
        try upstream.address("u0", "10.98.0.1/24")
        try sh("ip", "-n", passtNS.name, "route", "add", "default", "via", "10.98.0.1")

        // passt drops to nobody before binding: its directory must be writable by nobody.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("nbt-passt-\(getpid())-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try sh("chmod", "1777", dir.path)
        let sock = dir.appendingPathComponent("passt.sock").path
        let passt = try passtNS.spawn(["passt", "-f", "-q", "-s", sock])
        try waitUntil(10, "passt's socket") { FileManager.default.fileExists(atPath: sock) }
        let server = try passtNS.spawn(["python3", "-c", Self.server])
        try server.waitForLine("listening")

        let netbe = try NetbeBinary.start(["connect", "tap0,netns=\(ns.name)", "stream,connect=unix:\(sock)"])
        try sh("ip", "-n", ns.name, "link", "set", "tap0", "up")
        let lease = try DhcpLease.obtain(in: ns)
        #expect(lease.address.hasPrefix("10.98.0.2/"), "passt leased its host's address: \(lease.line)")
        let router = lease.router ?? "10.98.0.1"
        let reply = try ns.run("python3", "-c", "import socket; print(socket.create_connection(('\(router)', 8123), 5).recv(100).decode().strip())")
        #expect(reply.trimmingCharacters(in: .whitespacesAndNewlines) == "hello-from-passt-namespace")
        #expect(try netbe.stop() == 0, "netbe: \(netbe.stderr)")
        _ = try passt.stop(SIGKILL)
    }
}
