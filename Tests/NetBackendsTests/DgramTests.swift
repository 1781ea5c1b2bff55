import Foundation
import Testing

/// `dgram` between netbe processes over unix and UDP sockets, and as a multicast hub.
@Suite(.serialized) struct DgramTests {
    @Test func unixDatagramsCarryACheckedTransfer() throws {
        let p1 = TestSocketPath("d1"), p2 = TestSocketPath("d2")
        let rig = try TwoTapRig(left: "dgram,local=unix:\(p1.path),remote=unix:\(p2.path)",
                                right: "dgram,local=unix:\(p2.path),remote=unix:\(p1.path)", label: "du")
        try rig.waitPing()
        try checkedTransfer(from: rig.a, to: rig.b, ip: "10.77.0.2", bytes: 16 << 20)
        _ = try rig.stop()
        #expect(!FileManager.default.fileExists(atPath: p1.path) && !FileManager.default.fileExists(atPath: p2.path),
                "bound unix sockets are removed on SIGTERM")
    }

    /// The far side restarts (a new socket at the same path): traffic resumes without
    /// restarting this side, in both directions. The restarted side keeps its MAC address,
    /// as a restarted VM does: a datagram transport shows no link change, so A's
    /// neighbour entry for B stays valid.
    @Test func unixPeerRestartIsFollowed() throws {
        let p1 = TestSocketPath("dr1"), p2 = TestSocketPath("dr2")
        let right = "dgram,local=unix:\(p2.path),remote=unix:\(p1.path)"
        let mac = ",mac=52:54:00:77:00:02"
        let rig = try TwoTapRig(left: "dgram,local=unix:\(p1.path),remote=unix:\(p2.path)", right: right, label: "dr", rightTapOptions: mac)
        try rig.waitPing()
        #expect(try rig.right!.stop() == 0)
        rig.right = try NetbeBinary.start(["connect", right, "tap0,netns=\(rig.b.name)\(mac)"])
        try rig.b.address("tap0", "10.77.0.2/24")
        try rig.waitPing()
        #expect(try rig.b.run("ping", "-c", "1", "-W", "2", "10.77.0.1").contains("1 received"))
        _ = try rig.stop()
    }

    @Test func udpDatagramsCarryACheckedTransfer() throws {
        let port1 = try freeLoopbackPort(udp: true), port2 = try freeLoopbackPort(udp: true)
        let rig = try TwoTapRig(left: "dgram,local=udp:127.0.0.1:\(port1),remote=udp:127.0.0.1:\(port2)",
                                right: "dgram,local=udp:127.0.0.1:\(port2),remote=udp:127.0.0.1:\(port1)", label: "dp")
        try rig.waitPing()
        try checkedTransfer(from: rig.a, to: rig.b, ip: "10.77.0.2", bytes: 16 << 20)
        _ = try rig.stop()
    }

    /// Three netbe processes in one namespace (where their UDP sockets live) form a hub on
    /// a multicast group; each gives a tap to a namespace of its own. All pairs ping.
    @Test func multicastHubOfThree() throws {
        let hub = try TestNamespace("hub")
        try sh("ip", "-n", hub.name, "link", "set", "lo", "multicast", "on")
        try sh("ip", "-n", hub.name, "route", "add", "224.0.0.0/4", "dev", "lo")
        let members = try (1...3).map { try TestNamespace("m\($0)") }
        var netbes: [TestProcess] = []
        for (i, ns) in members.enumerated() {
            let p = try hub.spawn([try NetbeBinary.path, "connect", "tap0,netns=\(ns.name)", "dgram,remote=udp:239.255.77.1:47001"])
            try p.waitForLine("ready")
            netbes.append(p)
            try ns.address("tap0", "10.77.0.\(i + 1)/24")
        }
        for (i, ns) in members.enumerated() {
            for j in 0..<3 where j != i {
                try waitUntil(10, "ping 10.77.0.\(j + 1) from \(ns.name)") {
                    (try? ns.run("ping", "-c", "1", "-W", "1", "10.77.0.\(j + 1)")) != nil
                }
            }
        }
        var sent: [Int] = [], heard: [Int] = []
        for p in netbes {
            #expect(try p.stop() == 0)
            #expect(p.stderr.contains("joined multicast group"))
            let counters = try NetbeBinary.counters(p.stdout)
            func frames(from prefix: String) -> Int {
                counters.first { ($0["from"] as? String)?.hasPrefix(prefix) == true }?["frames"] as? Int ?? -1
            }
            heard.append(frames(from: "udp:"))
            sent.append(frames(from: "nbt"))
        }
        // A member never hears itself: it got at most what the two others sent (looped
        // back, its own frames would add its own count on top).
        for i in 0..<3 {
            let others = (0..<3).filter { $0 != i }.map { sent[$0] }.reduce(0, +)
            #expect(heard[i] > 0 && heard[i] <= others, "member \(i): heard \(heard[i]), others sent \(others), sent \(sent)")
        }
    }

    /// Datagrams shorter than an Ethernet header or longer than the receive buffer
    /// (MSG_TRUNC) are dropped and counted as `truncated`.
    @Test func shortAndTruncatedDatagramsAreCounted() throws {
        let ns = try TestNamespace("dt")
        let here = TestSocketPath("dtl"), there = TestSocketPath("dtr")
        let netbe = try NetbeBinary.start(["connect", "tap0,netns=\(ns.name)", "dgram,local=unix:\(here.path),remote=unix:\(there.path)"])
        try ns.address("tap0", "10.77.0.1/24")
        let client = try RawDgramClient(boundAt: there.path)
        var big = 120_000
        setsockopt(client.fd, SOL_SOCKET, SO_SNDBUF, &big, socklen_t(MemoryLayout<Int32>.size))
        try client.send([UInt8](repeating: 1, count: 10), to: here.path)
        try client.send([UInt8](repeating: 2, count: 100_000), to: here.path)
        #expect(try client.arpAnswered(by: here.path, target: [10, 77, 0, 1]), "good frames still pass")
        #expect(try netbe.stop() == 0)
        let counters = try NetbeBinary.counters(netbe.stdout)
        let fromSocket = counters.first { ($0["from"] as? String)?.contains("unix:") == true }
        let drops = fromSocket?["drops"] as? [String: Any]
        #expect(drops?["truncated"] as? Int == 2, "counters: \(counters)")
    }

    @Test(arguments: ["dgram", "dgram,local=unix:/tmp/x", "dgram,remote=tcp:127.0.0.1:5",
                      "dgram,local=unix:/tmp/x,remote=udp:127.0.0.1:5", "dgram,vfkit=on,local=udp:127.0.0.1:5",
                      "dgram,vfkit=on,local=unix:/tmp/x,remote=unix:/tmp/y", "dgram,remote=unix:/tmp/y"])
    func badSpecsExitTwo(spec: String) throws {
        let r = try NetbeBinary.run(["probe", spec])
        #expect(r.status == 2, "\(spec): \(r.stderr)")
    }
}
