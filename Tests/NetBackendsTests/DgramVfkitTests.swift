import Foundation
import Testing

/// `dgram,vfkit=on` against a test client speaking vfkit's protocol (vfkit itself is
/// macOS-only): an optional 4-byte VFKT greeting, then one frame per datagram, from a
/// bound unix datagram socket; netbe learns the peer and answers with sendto.
@Suite(.serialized) struct DgramVfkitTests {
    static let target: [UInt8] = [10, 77, 0, 1]

    func start(_ ns: TestNamespace, _ sock: TestSocketPath) throws -> TestProcess {
        let netbe = try NetbeBinary.start(["connect", "tap0,netns=\(ns.name)", "dgram,local=unix:\(sock.path),vfkit=on"])
        try ns.address("tap0", "10.77.0.1/24")
        return netbe
    }

    @Test func withGreetingThenPeerRestartsFromANewAddress() throws {
        let ns = try TestNamespace("vf")
        let sock = TestSocketPath("vf")
        let netbe = try start(ns, sock)
        #expect(netbe.stderr.contains("SO_SNDBUF asked 1048576 got"), "granted buffer sizes are logged: \(netbe.stderr)")
        #expect(netbe.stderr.contains("SO_RCVBUF asked 4194304 got"))
        // No peer yet: the tap shows no carrier.
        #expect(try sh("ip", "-n", ns.name, "link", "show", "tap0").contains("NO-CARRIER"))
        let first = TestSocketPath("vfc")
        do {
            let client = try RawDgramClient(boundAt: first.path)
            #expect(try client.arpAnswered(by: sock.path, target: Self.target, greeting: true))
        }
        try ns.waitCarrier("tap0")
        // The peer restarts from another address and greets again: netbe re-learns it.
        let second = TestSocketPath("vfd")
        let restarted = try RawDgramClient(boundAt: second.path)
        #expect(try restarted.arpAnswered(by: sock.path, target: Self.target, greeting: true))
        #expect(netbe.stderr.contains("vfkit peer is \(second.path) (was \(first.path)), greeted with VFKT"), "\(netbe.stderr)")
        #expect(try netbe.stop() == 0)
        // The greetings were discarded, not relayed or counted as short frames.
        let counters = try NetbeBinary.counters(netbe.stdout)
        let fromSocket = counters.first { ($0["from"] as? String)?.contains("unix:") == true }
        #expect((fromSocket?["drops"] as? [String: Any])?["truncated"] as? Int == 0, "\(counters)")
    }

    @Test func withoutGreeting() throws {
        let ns = try TestNamespace("vn")
        let sock = TestSocketPath("vn")
        let netbe = try start(ns, sock)
        let path = TestSocketPath("vnc")
        let client = try RawDgramClient(boundAt: path.path)
        #expect(try client.arpAnswered(by: sock.path, target: Self.target, greeting: false))
        #expect(netbe.stderr.contains("vfkit peer is \(path.path)"))
        #expect(try netbe.stop() == 0)
        #expect(!FileManager.default.fileExists(atPath: sock.path))
    }

    /// A new source without a greeting (same peer, new socket) is re-learned too.
    @Test func newSourceWithoutGreetingIsRelearned() throws {
        let ns = try TestNamespace("vs")
        let sock = TestSocketPath("vs")
        let netbe = try start(ns, sock)
        let p1 = TestSocketPath("vs1"), p2 = TestSocketPath("vs2")
        let c1 = try RawDgramClient(boundAt: p1.path)
        #expect(try c1.arpAnswered(by: sock.path, target: Self.target))
        let c2 = try RawDgramClient(boundAt: p2.path)
        #expect(try c2.arpAnswered(by: sock.path, target: Self.target))
        #expect(netbe.stderr.contains("vfkit peer is \(p2.path) (was \(p1.path))"))
        #expect(try netbe.stop() == 0)
    }
}
