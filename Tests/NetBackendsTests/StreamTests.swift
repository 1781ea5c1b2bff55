import Foundation
import Testing

/// `stream` between two netbe processes, each holding a tap in its own namespace.
@Suite(.serialized) struct StreamTests {
    static let transferBytes = 16 << 20

    @Test func unixStreamCarriesACheckedTransfer() throws {
        let sock = TestSocketPath("st")
        let rig = try TwoTapRig(left: "stream,listen=unix:\(sock.path)", right: "stream,connect=unix:\(sock.path)", label: "su")
        try rig.waitPing()
        try checkedTransfer(from: rig.a, to: rig.b, ip: "10.77.0.2", bytes: Self.transferBytes)
        let counters = try rig.stop()
        #expect(counters.left.count == 2 && counters.right.count == 2)
        #expect(!FileManager.default.fileExists(atPath: sock.path), "the listener removes its socket on SIGTERM")
    }

    @Test func tcpStreamCarriesACheckedTransfer() throws {
        let port = try freeLoopbackPort()
        let rig = try TwoTapRig(left: "stream,listen=tcp:127.0.0.1:\(port)", right: "stream,connect=tcp:127.0.0.1:\(port)", label: "st")
        try rig.waitPing()
        try checkedTransfer(from: rig.a, to: rig.b, ip: "10.77.0.2", bytes: Self.transferBytes)
        _ = try rig.stop()
    }

    @Test func ipv6LoopbackAddressInBrackets() throws {
        let port = try freeLoopbackPort()
        let rig = try TwoTapRig(left: "stream,listen=tcp:[::1]:\(port)", right: "stream,connect=tcp:[::1]:\(port)", label: "s6")
        try rig.waitPing()
        _ = try rig.stop()
    }

    @Test func vnetOnCarriesGSOFramesWhole() throws {
        let sock = TestSocketPath("sv")
        let rig = try TwoTapRig(left: "stream,listen=unix:\(sock.path),vnet=on", right: "stream,connect=unix:\(sock.path),vnet=on", label: "sv")
        try rig.waitPing()
        try checkedTransfer(from: rig.a, to: rig.b, ip: "10.77.0.2", bytes: Self.transferBytes)
        let counters = try rig.stop()
        #expect(gsoFrames(counters.left) > 0, "GSO frames crossed A's netbe: \(counters.left)")
        #expect(gsoFrames(counters.right) > 0, "GSO frames crossed B's netbe: \(counters.right)")
    }

    @Test func connectingSideReconnectsWhenTheListenerRestarts() throws {
        let sock = TestSocketPath("sr")
        let rig = try TwoTapRig(left: "stream,listen=unix:\(sock.path)", right: "stream,connect=unix:\(sock.path),reconnect=1", label: "sr")
        try rig.waitPing()
        let connector = rig.right!
        #expect(try rig.left!.stop() == 0)
        // No peer: B's tap loses carrier.
        try waitUntil(5, "NO-CARRIER on B's tap") {
            try sh("ip", "-n", rig.b.name, "link", "show", "tap0").contains("NO-CARRIER")
        }
        try rig.startLeft()
        try rig.waitPing(seconds: 15)
        #expect(connector.isRunning, "the connecting netbe was not restarted")
        #expect(connector.stderr.components(separatedBy: "attached").count - 1 == 2, "two attachments logged: \(connector.stderr)")
        #expect(connector.stderr.contains("left"))
        _ = try rig.stop()
    }

    @Test func listenerTakesTheNextPeerWhenOneLeaves() throws {
        let sock = TestSocketPath("sl")
        let rig = try TwoTapRig(left: "stream,listen=unix:\(sock.path)", right: "stream,connect=unix:\(sock.path)", label: "sl")
        try rig.waitPing()
        #expect(try rig.right!.stop() == 0)
        try waitUntil(5, "NO-CARRIER on A's tap") {
            try sh("ip", "-n", rig.a.name, "link", "show", "tap0").contains("NO-CARRIER")
        }
        rig.right = try NetbeBinary.start(["connect", "stream,connect=unix:\(sock.path)", "tap0,netns=\(rig.b.name)"])
        try rig.b.address("tap0", "10.77.0.2/24")
        try rig.waitPing()
        _ = try rig.stop()
    }

    @Test func connectWithoutListenerExitsOneBeforeReady() throws {
        let sock = TestSocketPath("sn")
        let r = try NetbeBinary.run(["connect", "stream,connect=unix:\(sock.path)", "stream,connect=unix:\(sock.path)"])
        #expect(r.status == 1)
        #expect(!r.stdout.contains("ready"))
        #expect(r.stderr.contains("connect"))
    }

    @Test func connectorWithoutReconnectExitsOneWhenThePeerLeaves() throws {
        let sock = TestSocketPath("sx")
        let rig = try TwoTapRig(left: "stream,listen=unix:\(sock.path)", right: "stream,connect=unix:\(sock.path)", label: "sx")
        try rig.waitPing()
        _ = try rig.left!.stop()
        #expect(try rig.right!.wait(seconds: 10) == 1)
        #expect(rig.right!.stderr.contains("reconnect= is not set"))
    }

    @Test func backendsListsTheSocketKinds() throws {
        let r = try NetbeBinary.run(["backends", "--json"])
        #expect(r.status == 0)
        let kinds = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]] ?? []
        for name in ["stream", "dgram"] {
            let k = kinds.first { $0["kind"] as? String == name }
            #expect(k?["availability"] as? String == "available", "\(name): \(r.stdout)")
        }
    }

    @Test(arguments: [
        "stream", "stream,listen=unix:/tmp/x,connect=unix:/tmp/y", "stream,listen=udp:127.0.0.1:5",
        "stream,listen=tcp:::1:5", "stream,listen=tcp:127.0.0.1:70000", "stream,listen=unix:/tmp/x,reconnect=3",
        "stream,connect=ftp:host:1", "stream,listen=unix:/tmp/x,bogus=1",
    ])
    func badSpecsExitTwo(spec: String) throws {
        let r = try NetbeBinary.run(["probe", spec])
        #expect(r.status == 2, "\(spec): \(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1, "one line on stderr: \(r.stderr)")
    }
}
