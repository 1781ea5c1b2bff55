import Foundation
import Testing

/// The `vxlan` backend against the Linux kernel's own vxlan device. "Host" A is a guest
/// namespace whose tap netbe joins to `vxlan`; netbe runs in an underlay namespace joined
/// by a veth to namespace B, which holds the kernel's vxlan device (VNI 42, port 4789) on
/// the other veth end. Inner network 192.168.42.0/24, MTU 1450 (1500 - 50; 1430 with
/// IPv6 outside).
@Suite(.serialized) struct VxlanTests {
    enum Outer: String, CaseIterable, CustomTestStringConvertible {
        case ipv4, ipv6
        var testDescription: String { rawValue }
        func address(_ host: Int) -> String { self == .ipv4 ? "10.77.0.\(host)" : "fd77::\(host)" }
        func udp(_ host: Int, _ port: Int = 4789) -> String { self == .ipv4 ? "udp:10.77.0.\(host):\(port)" : "udp:[fd77::\(host)]:\(port)" }
        var prefix: String { self == .ipv4 ? "/24" : "/64" }
        var innerMTU: Int { self == .ipv4 ? 1450 : 1430 }
    }

    /// The underlay (U for netbe, B for the kernel, joined by a veth) and the guest A.
    final class Rig {
        let outer: Outer
        let underlay: TestNamespace
        let kernel: TestNamespace
        let guest: TestNamespace
        var netbes: [TestProcess] = []

        init(_ outer: Outer = .ipv4, netbeHosts: [Int] = [1]) throws {
            self.outer = outer
            underlay = try TestNamespace("vu")
            kernel = try TestNamespace("vb")
            guest = try TestNamespace("va")
            try sh("ip", "link", "add", "u0", "netns", underlay.name, "type", "veth", "peer", "name", "b0", "netns", kernel.name)
            for h in netbeHosts { try addAddress(underlay, "u0", outer.address(h)) }
            try addAddress(kernel, "b0", outer.address(2))
            // A veth passes the kernel VTEP's packets on with the inner checksum still
            // partial (a NIC would fill it in); delivered to netbe's UDP socket it would stay
            // unfinished. With checksum offload off on B's veth the kernel completes it.
            try requireTool("ethtool", package: "ethtool")
            try kernel.run("ethtool", "-K", "b0", "tx", "off")
            // GRO on netbe's veth, as on a NIC: datagrams of a flow then reach netbe's
            // socket joined (UDP GRO), the path `gro=on` reads.
            try underlay.run("ethtool", "-K", "u0", "gro", "on")
        }

        func addAddress(_ ns: TestNamespace, _ dev: String, _ address: String) throws {
            var args = ["ip", "-n", ns.name, "addr", "add", address + outer.prefix, "dev", dev]
            if outer == .ipv6 { args.append("nodad") }
            try sh(args)
            try sh("ip", "-n", ns.name, "link", "set", dev, "up")
        }

        /// The kernel's VTEP in B: `vx0` (VNI `vni`) with 192.168.`vni`.2, sending to `remotes`
        /// (each an fdb entry for all-zero MAC: the kernel's own head-end replication), or to
        /// a multicast group.
        func kernelVTEP(vni: Int = 42, remotes: [Int] = [1], group: String? = nil, name: String = "vx0") throws {
            var args = ["ip", "-n", kernel.name, "link", "add", name, "type", "vxlan", "id", String(vni), "dstport", "4789",
                        "local", outer.address(2), "dev", "b0"]
            if let group { args += ["group", group] }
            try sh(args)
            if group == nil {
                for r in remotes {
                    try sh("bridge", "-n", kernel.name, "fdb", "append", "00:00:00:00:00:00", "dev", name, "dst", outer.address(r))
                }
            }
            try sh("ip", "-n", kernel.name, "link", "set", name, "mtu", String(outer.innerMTU))
            try sh("ip", "-n", kernel.name, "addr", "add", "192.168.\(vni).2/24", "dev", name)
            try sh("ip", "-n", kernel.name, "link", "set", name, "up")
        }

        /// netbe in the underlay joining `guestNS`'s tap0 (192.168.42.`host`) to vxlan.
        @discardableResult
        func netbe(host: Int = 1, guestNS: TestNamespace? = nil, _ options: String) throws -> TestProcess {
            let g = guestNS ?? guest
            let p = try underlay.spawn([try NetbeBinary.path, "connect", "tap0,netns=\(g.name),mtu=\(outer.innerMTU)",
                                        "vxlan,vni=42,local=\(outer.udp(host))," + options])
            try p.waitForLine("ready")
            try sh("ip", "-n", g.name, "addr", "add", "192.168.42.\(host)/24", "dev", "tap0")
            try sh("ip", "-n", g.name, "link", "set", "tap0", "up")
            netbes.append(p)
            return p
        }

        func ping(_ from: TestNamespace, _ to: String, count: Int = 3) -> Bool {
            (try? sh(["ip", "netns", "exec", from.name, "ping", "-c", String(count), "-i", "0.2", "-W", "2", to], allowFailure: false)) != nil
        }
    }

    static func counter(_ o: [String: Any], _ key: String) -> UInt64 { (o[key] as? NSNumber)?.uint64Value ?? 0 }
    static func drop(_ o: [String: Any], _ reason: String) -> UInt64 {
        ((o["drops"] as? [String: Any])?[reason] as? NSNumber)?.uint64Value ?? 0
    }

    /// Stops netbe and returns its direction out of vxlan (frames netbe received).
    static func stopAndReadInbound(_ p: TestProcess) throws -> [String: Any] {
        #expect(try p.stop() == 0, "netbe: \(p.stderr)")
        let counters = try NetbeBinary.counters(p.stdout)
        return try #require(counters.first { ($0["from"] as? String)?.hasPrefix("vni ") == true }, "\(p.stdout)")
    }

    /// With UDP GSO, TSO and GRO (the defaults) over IPv4 and IPv6 outside, without TSO
    /// (the relay cuts), and without any. With TSO the tap's super-frames reach vxlan whole.
    @Test(arguments: [(Outer.ipv4, "gso=on,gro=on"), (Outer.ipv6, "gso=on,gro=on"), (Outer.ipv4, "tso=off"),
                      (Outer.ipv4, "gso=off,gro=off")])
    func pingAndTCPBothWaysWithTheKernelsVxlan(_ outer: Outer, offloads: String) throws {
        try requireTool("python3", package: "python3")
        let rig = try Rig(outer)
        try rig.kernelVTEP()
        let netbe = try rig.netbe("remote=\(outer.udp(2)),\(offloads)")
        try waitUntil(10, "ping from A to the kernel's VTEP") { rig.ping(rig.guest, "192.168.42.2", count: 1) }
        #expect(rig.ping(rig.guest, "192.168.42.2"))
        #expect(rig.ping(rig.kernel, "192.168.42.1"))
        for (from, to, host) in [(rig.guest, rig.kernel, "192.168.42.2"), (rig.kernel, rig.guest, "192.168.42.1")] {
            let r = try TcpTransfer.run(from: from, to: to, host: host, port: 5201, bytes: 16 << 20, seed: 42)
            #expect(r.sent == r.received, "sha256 differs: sent \(r.sent), received \(r.received)")
        }
        let inbound = try Self.stopAndReadInbound(netbe)
        let tso = !offloads.contains("off")
        #expect(netbe.stderr.contains("opened vxlan vni 42: header \(tso ? "12 bytes, offloads CSUM,HOST_TSO4,HOST_TSO6" : "0 bytes, offloads none")"),
                "\(netbe.stderr)")
        #expect(Self.counter(inbound, "frames") > 1000)
        #expect(Self.drop(inbound, "wrong_vni") == 0 && Self.drop(inbound, "malformed") == 0, "\(inbound)")
    }

    /// The kernel's VTEP for VNI 43 sends to netbe too: nothing of it reaches A, every such
    /// frame counts as `wrong_vni`; a datagram without the I flag counts as `malformed`.
    @Test func wrongVNIAndBadHeadersAreDroppedAndCounted() throws {
        let rig = try Rig()
        try rig.kernelVTEP()
        try rig.kernelVTEP(vni: 43, name: "vx1")
        let netbe = try rig.netbe("remote=\(rig.outer.udp(2))")
        try sh("ip", "-n", rig.guest.name, "addr", "add", "192.168.43.1/24", "dev", "tap0")
        try waitUntil(10, "ping on VNI 42") { rig.ping(rig.guest, "192.168.42.2", count: 1) }
        // ARP requests for 192.168.43.1 go out of vx1 with VNI 43 and must not be answered.
        #expect(!rig.ping(rig.kernel, "192.168.43.1", count: 3))
        try rig.kernel.run("python3", "-c", """
        import socket; s = socket.socket(); s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(bytes([0, 0, 0, 0, 0, 0, 42, 0]) + bytes(60), ("10.77.0.1", 4789))
        """)
        let inbound = try Self.stopAndReadInbound(netbe)
        #expect(Self.drop(inbound, "wrong_vni") >= 3, "\(inbound)")
        #expect(Self.drop(inbound, "malformed") == 1, "\(inbound)")
    }

    /// Three hosts: two netbe VTEPs (A .1, C .3, each with its own guest) and the kernel's
    /// (B .2), each sending broadcasts to both others. Every pair talks; once learned,
    /// unicast between A and C no longer reaches B.
    @Test func threeHostsWithHeadEndReplication() throws {
        let rig = try Rig(.ipv4, netbeHosts: [1, 3])
        let guestC = try TestNamespace("vc")
        try rig.kernelVTEP(remotes: [1, 3])
        try rig.netbe(host: 1, "remote=udp:10.77.0.2:4789,remote=udp:10.77.0.3:4789")
        try rig.netbe(host: 3, guestNS: guestC, "remote=udp:10.77.0.2:4789,remote=udp:10.77.0.1:4789")
        try waitUntil(10, "A reaches B") { rig.ping(rig.guest, "192.168.42.2", count: 1) }
        #expect(rig.ping(rig.guest, "192.168.42.3"))
        #expect(rig.ping(guestC, "192.168.42.2"))
        #expect(rig.ping(rig.kernel, "192.168.42.3"))
        #expect(rig.ping(rig.kernel, "192.168.42.1"))
        let before = try Self.rxPackets(rig.kernel, "vx0")
        #expect(rig.ping(rig.guest, "192.168.42.3", count: 20))
        let after = try Self.rxPackets(rig.kernel, "vx0")
        #expect(after - before < 10, "B received \(after - before) frames of A<->C unicast: learning failed")
        let r = try TcpTransfer.run(from: rig.guest, to: guestC, host: "192.168.42.3", port: 5202, bytes: 8 << 20, seed: 7)
        #expect(r.sent == r.received)
        for p in rig.netbes { #expect(try p.stop() == 0, "\(p.stderr)") }
    }

    /// A multicast group as the remote: netbe joins it, the kernel's vxlan uses the same group.
    @Test func multicastGroupRemote() throws {
        let rig = try Rig()
        try rig.kernelVTEP(group: "239.1.1.42")
        try sh("ip", "-n", rig.underlay.name, "route", "add", "224.0.0.0/4", "dev", "u0")
        let netbe = try rig.netbe("remote=udp:239.1.1.42:4789")
        try waitUntil(10, "ping through the group") { rig.ping(rig.guest, "192.168.42.2", count: 1) }
        #expect(rig.ping(rig.kernel, "192.168.42.1"))
        #expect(netbe.stderr.contains("joined multicast group 239.1.1.42:4789"), "\(netbe.stderr)")
        #expect(try netbe.stop() == 0)
    }

    /// Frames the kernel's device received (`ip -s -j link`).
    static func rxPackets(_ ns: TestNamespace, _ dev: String) throws -> Int {
        let json = try sh("ip", "-n", ns.name, "-s", "-j", "link", "show", "dev", dev)
        guard let list = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]],
              let stats = list.first?["stats64"] as? [String: Any], let rx = stats["rx"] as? [String: Any],
              let packets = rx["packets"] as? NSNumber else { throw TestFailure("no rx counter in \(json)") }
        return packets.intValue
    }

    @Test(arguments: [
        ("vxlan,remote=udp:127.0.0.2:4789", "give vni=N"),
        ("vxlan,vni=16777216,remote=udp:127.0.0.2:4789", "vni=16777216"),
        ("vxlan,vni=1", "give at least one remote="),
        ("vxlan,vni=1,remote=tcp:127.0.0.2:4789", "remote=tcp:127.0.0.2:4789: expected udp:HOST:PORT"),
        ("vxlan,vni=1,remote=udp:127.0.0.2:4789,remote=udp:[::1]:4789", "mixes IPv4 and IPv6"),
        ("vxlan,vni=1,remote=udp:127.0.0.2:4789,local=udp:[::1]:4789", "local=udp:[::1]:4789"),
        ("vxlan,vni=1,remote=udp:127.0.0.2:4789,mtu=9000", "unknown option 'mtu'"),
    ])
    func badSpecsExit2(spec: String, message: String) throws {
        let r = try NetbeBinary.run(["connect", "tap0", spec], seconds: 10)
        #expect(r.status == 2, "\(spec): \(r.stderr)")
        #expect(r.stderr.contains(message), "\(spec): \(r.stderr)")
    }
}
