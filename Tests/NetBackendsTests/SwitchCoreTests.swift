import Foundation
import NetBackends
import Testing

/// The learning table on its own: bounds, moves, aging, group addresses.
@Suite struct MACTableTests {
    static func mac(_ i: Int) -> UInt64 { UInt64(0x02) | UInt64(i) << 16 }

    @Test func fullTableRefusesAndFloodsNeverCrashes() {
        let t = MACTable(capacity: 8, agingSeconds: 300)
        var learned = 0
        for i in 0..<1000 where t.learn(Self.mac(i), port: 1, now: 10) { learned += 1 }
        #expect(learned <= t.capacity)
        #expect(t.full == UInt64(1000 - learned))
        #expect(t.count(now: 10) == learned)
        // An address that found no room is unknown: its frames are flooded.
        let refused = (0..<1000).first { t.lookup(Self.mac($0), now: 10) < 0 }
        #expect(refused != nil)
    }

    @Test func movedAddressIsRelearned() {
        let t = MACTable()
        t.learn(Self.mac(7), port: 1, now: 5)
        #expect(t.lookup(Self.mac(7), now: 5) == 1)
        t.learn(Self.mac(7), port: 2, now: 6)
        #expect(t.lookup(Self.mac(7), now: 6) == 2)
        #expect(t.moves == 1)
    }

    @Test func agedEntriesAreUnknownAndReused() {
        let t = MACTable(capacity: 4, agingSeconds: 3)
        for i in 0..<4 { t.learn(Self.mac(i), port: 1, now: 100) }
        #expect(t.lookup(Self.mac(0), now: 102) == 1)
        #expect(t.lookup(Self.mac(0), now: 103) == -1)
        // Room again once they aged out.
        #expect(t.learn(Self.mac(50), port: 3, now: 104))
        #expect(t.lookup(Self.mac(50), now: 104) == 3)
    }

    @Test func groupAndZeroAddressesAreNeverLearned() {
        let t = MACTable()
        #expect(!t.learn(0xffff_ffff_ffff, port: 1, now: 1))
        #expect(!t.learn(0x01 | 0x5e00 << 8, port: 1, now: 1))
        #expect(!t.learn(0, port: 1, now: 1))
        t.forget(port: 1)
        t.learn(Self.mac(1), port: 1, now: 1)
        t.forget(port: 1)
        #expect(t.lookup(Self.mac(1), now: 1) == -1)
    }
}

/// A `NetSwitch` in one process (a VMM with several NICs): taps in namespaces the test
/// made, each attached as a port, real traffic from the kernels.
@Suite(.serialized) struct SwitchCoreTests {
    final class Rig {
        let namespaces: [TestNamespace]
        let loop: NetEventLoop
        let sw: NetSwitch
        var backends: [NetBackend] = []
        var ports: [SwitchPort] = []
        var thread: LoopThread?

        /// `tapOptions[i]`: extra spec options of tap i (namespace i, 10.77.0.(i+1)/24).
        init(tapOptions: [String], extra: [(String, NetBackend)] = []) throws {
            try requireTool("ping", package: "iputils-ping")
            loop = try NetEventLoop()
            sw = NetSwitch(name: "vale0", eventLoop: loop)
            var made: [TestNamespace] = []
            for (i, options) in tapOptions.enumerated() {
                let ns = try TestNamespace("sw\(i)")
                made.append(ns)
                try ns.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
                let tap = try BackendRegistry.shared.open("tap0,netns=\(ns.name)\(options)", on: loop)
                backends.append(tap)
                ports.append(try sw.attach(tap, name: "p\(i)"))
                try ns.address("tap0", "10.77.0.\(i + 1)/24")
            }
            for (name, b) in extra {
                backends.append(b)
                ports.append(try sw.attach(b, name: name))
            }
            namespaces = made
            thread = try LoopThread(loop)
        }

        deinit {
            _ = try? thread?.stop()
            for b in backends { b.close() }
            for ns in namespaces { ns.delete() }
        }

        func ping(_ from: Int, _ to: Int, count: Int = 1, interval: String = "0.2") throws {
            try namespaces[from].run("ping", "-q", "-c", "\(count)", "-i", interval, "-W", "2", "10.77.0.\(to + 1)")
        }
    }

    @Test func allPairsPingThenUnicastStaysBetweenTheTwo() throws {
        let rig = try Rig(tapOptions: ["", "", ""])
        for a in 0..<3 { for b in 0..<3 where a != b { try rig.ping(a, b) } }
        // Learned now: 20 pings between 0 and 1 must not reach port 2.
        let before2 = rig.ports[2].sent.frames
        let before0 = rig.ports[0].sent.frames
        try rig.ping(0, 1, count: 20, interval: "0.01")
        #expect(rig.ports[2].sent.frames == before2, "unicast between ports 0 and 1 reached port 2")
        #expect(rig.ports[0].sent.frames >= before0 + 20, "port 0 did not get its 20 replies")
        for p in rig.ports { #expect(p.received.totalDrops == 0 && p.sent.totalDrops == 0, "\(p.name) dropped") }
    }

    @Test func fullPortDropsForItselfOnlyAndSourceNeverGetsItsOwn() throws {
        // The slow port must live on the rig's loop: build the rig, then attach it there.
        let rig = try Rig(tapOptions: ["", ""])
        let slow = try DatagramPairBackend(loop: rig.loop, sendBuffer: 4096)
        let sw = rig.sw
        let slowPort = try rig.thread!.sync { () -> Result<SwitchPort, NetBackendError> in
            do throws(NetBackendError) { return .success(try sw.attach(slow, name: "slow")) } catch { return .failure(error) }
        }.get()
        defer { slow.close() }
        try rig.ping(0, 1)
        let sent0 = rig.ports[0].sent.frames
        let sent1 = rig.ports[1].sent.frames
        // 300 broadcast echo requests from namespace 0: flooded to port 1 and the slow port.
        // Nobody answers (namespace 1 ignores broadcast echo): ping exits 1, as expected.
        _ = try sh(["ip", "netns", "exec", rig.namespaces[0].name, "ping", "-q", "-b", "-c", "300", "-i", "0.002", "-W", "1", "10.77.0.255"],
                   allowFailure: true)
        #expect(rig.ports[1].sent.frames >= sent1 + 300, "port 1 missed broadcasts while the slow port was full")
        #expect(slowPort.sent.drops(.queueFull) > 0, "the slow port never filled")
        #expect(rig.ports[1].sent.drops(.queueFull) == 0)
        // Namespace 1 ignores broadcast echo requests: port 0 would see its own 300 only if echoed back.
        #expect(rig.ports[0].sent.frames < sent0 + 300, "port 0 received its own broadcasts")
        try rig.ping(0, 1, count: 5, interval: "0.05")
        _ = try? rig.thread?.sync { sw.detach(slowPort) }
    }

    @Test func superFramesAreCutForAPortWithoutOffloads() throws {
        try requireDebianPython()
        let rig = try Rig(tapOptions: ["", ",offload=off"])
        try rig.ping(0, 1)
        let r = try TcpTransfer.run(from: rig.namespaces[0], to: rig.namespaces[1], host: "10.77.0.2", port: 5301,
                                    bytes: 16 << 20, seed: 99)
        #expect(r.sent == r.received)
        #expect(rig.ports[1].sent.softwareSegmented > 0, "no super-frame was cut for the offload=off tap")
        #expect(rig.ports[1].sent.totalDrops == 0)
        #expect(rig.ports[1].backend.negotiatedFeatures.isDisjoint(with: [.hostTSO4, .hostTSO6]))
    }

    @Test func secondPortOfTheSameNameIsBusy() throws {
        let loop = try NetEventLoop()
        let sw = NetSwitch(name: "vale9", eventLoop: loop, maximumPorts: 2)
        let a = try DatagramPairBackend(loop: loop), b = try DatagramPairBackend(loop: loop), c = try DatagramPairBackend(loop: loop)
        defer { sw.detachAll(); a.close(); b.close(); c.close() }
        try sw.attach(a, name: "x")
        #expect(throws: NetBackendError.self) { try sw.attach(b, name: "x") }
        do { try sw.attach(b, name: "x") } catch {
            guard case .system(let e) = error else { Issue.record("not a system error: \(error)"); return }
            #expect(e.errno == EBUSY)
        }
        try sw.attach(b, name: "y")
        do { try sw.attach(c, name: "z"); Issue.record("a third port fit a two-port switch") } catch {
            guard case .system(let e) = error else { Issue.record("not a system error: \(error)"); return }
            #expect(e.errno == ENOSPC)
        }
    }
}
