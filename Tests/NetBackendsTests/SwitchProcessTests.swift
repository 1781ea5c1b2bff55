import Foundation
import NetBackends
import Testing

/// `netbe switch` with ports in other processes, driven as a user drives it: a daemon on
/// a socket of the test's own, and `netbe connect valeX:aN,switch=... tap0,netns=...` per
/// namespace; counters read with `netbe ports --json`.
@Suite(.serialized) struct SwitchProcessTests {
    final class Rig {
        let directory: String
        let socket: String
        var daemon: TestProcess?
        var namespaces: [TestNamespace] = []
        var clients: [TestProcess?] = []

        let daemonPorts: [String]

        /// `daemonPorts`: `--port` specs of the daemon; `addresses` false leaves the taps
        /// without address (DHCP will give them one).
        /// Run the daemon as `nobody` (setpriv), in a directory it may write.
        let unprivileged: Bool

        init(ports: [String], daemonPorts: [String] = [], addresses: Bool = true, unprivileged: Bool = false) throws {
            self.daemonPorts = daemonPorts
            self.unprivileged = unprivileged
            try requireTool("ping", package: "iputils-ping")
            directory = TrafficRig.tempPath("switch")
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            if unprivileged { try sh("chown", "65534:65534", directory) }
            socket = directory + "/switch.sock"
            try startDaemon()
            for (i, options) in ports.enumerated() {
                let ns = try TestNamespace("vp\(i)")
                try ns.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
                namespaces.append(ns)
                clients.append(try startClient(i, tapOptions: options))
                if addresses {
                    try ns.address("tap0", "10.78.0.\(i + 1)/24")
                } else {
                    try sh("ip", "-n", ns.name, "link", "set", "tap0", "up")
                }
                try ns.waitCarrier("tap0")
            }
        }

        deinit {
            clients = []          // killed by PID before their namespaces go
            daemon = nil
            for ns in namespaces { ns.delete() }
            try? FileManager.default.removeItem(atPath: directory)
        }

        func startDaemon() throws {
            let args = ["switch", "vale0", "--socket", socket] + daemonPorts.flatMap { ["--port", $0] }
            if unprivileged {
                try requireTool("setpriv", package: "util-linux")
                let p = try TestProcess(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", try NetbeBinary.path] + args)
                try p.waitForLine("ready")
                daemon = p
            } else {
                daemon = try NetbeBinary.start(args)
            }
        }

        func startClient(_ i: Int, tapOptions: String = "") throws -> TestProcess {
            try NetbeBinary.start(["connect", "vale0:a\(i),switch=\(socket)", "tap0,netns=\(namespaces[i].name)\(tapOptions)"])
        }

        func ping(_ from: Int, _ to: Int, count: Int = 1, interval: String = "0.2") throws {
            try namespaces[from].run("ping", "-q", "-c", "\(count)", "-i", interval, "-W", "2", "10.78.0.\(to + 1)")
        }

        /// The daemon's ports of vale0 by name, from `netbe ports --json`.
        func ports() throws -> [String: [String: Any]] {
            let r = try NetbeBinary.run(["ports", "vale0", "--json", "--socket", socket])
            guard r.status == 0 else { throw TestFailure("netbe ports exited \(r.status): \(r.stderr)") }
            guard let o = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any],
                  let sw = (o["switches"] as? [[String: Any]])?.first, let list = sw["ports"] as? [[String: Any]] else {
                throw TestFailure("not the ports JSON: \(r.stdout)")
            }
            var out: [String: [String: Any]] = [:]
            for p in list { if let n = p["name"] as? String { out[n] = p } }
            return out
        }

        func counter(_ port: String, _ key: String) throws -> UInt64 {
            let p = try #require(try ports()[port], "no port \(port)")
            return (p[key] as? NSNumber)?.uint64Value ?? .max
        }
    }

    @Test func threeProcessesAllPairsPingAndUnicastStaysBetweenTwo() throws {
        let rig = try Rig(ports: ["", "", ""])
        for a in 0..<3 { for b in 0..<3 where a != b { try rig.ping(a, b) } }
        let ports = try rig.ports()
        for n in ["a0", "a1", "a2"] {
            #expect((ports[n]?["macs"] as? [String])?.count == 1, "\(n) learned no MAC: \(ports[n] ?? [:])")
        }
        let third = try rig.counter("a2", "frames")
        let first = try rig.counter("a0", "frames")
        try rig.ping(0, 1, count: 20, interval: "0.01")
        #expect(try rig.counter("a2", "frames") == third, "unicast between a0 and a1 reached a2")
        #expect(try rig.counter("a0", "frames") >= first + 20)
    }

    @Test func daemonAsNobody() throws {
        let rig = try Rig(ports: ["", ""], unprivileged: true)
        let status = try String(contentsOfFile: "/proc/\(rig.daemon!.pid)/status", encoding: .utf8)
        let uid = status.split(separator: "\n").first { $0.hasPrefix("Uid:") } ?? ""
        #expect(uid.split(separator: "\t").dropFirst().allSatisfy { $0 == "65534" }, "the daemon is not nobody: \(uid)")
        try rig.ping(0, 1, count: 2, interval: "0.1")
        try rig.ping(1, 0)
    }

    @Test func tcpFromOffloadingPortIsCutForOffloadOffTap() throws {
        try requireDebianPython()
        let rig = try Rig(ports: ["", ",offload=off"])
        try rig.ping(0, 1)
        let r = try TcpTransfer.run(from: rig.namespaces[0], to: rig.namespaces[1], host: "10.78.0.2", port: 5302,
                                    bytes: 32 << 20, seed: 7)
        #expect(r.sent == r.received, "sha256 differs")
        let a1 = try #require(try rig.ports()["a1"])
        #expect(((a1["sw_segmented"] as? NSNumber)?.uint64Value ?? 0) > 0, "nothing was cut for the offload=off port: \(a1)")
        // The switch may drop for a port whose ring is full (queue_full: TCP resends);
        // nothing else, and whatever reached the port's process went into its tap.
        let drops = (a1["drops"] as? [String: Any]) ?? [:]
        for (reason, n) in drops where reason != "queue_full" {
            #expect((n as? NSNumber)?.uint64Value == 0, "\(reason) at a1: \(a1)")
        }
        let client = try #require(rig.clients[1])
        _ = try client.stop(SIGTERM)
        rig.clients[1] = nil
        let toTap = try #require(try NetbeBinary.counters(client.stdout).first { ($0["from"] as? String) == "vale0:a1" })
        let lost = ((toTap["drops"] as? [String: Any]) ?? [:]).values.reduce(UInt64(0)) { $0 + (($1 as? NSNumber)?.uint64Value ?? 1) }
        #expect(lost == 0, "the offload=off tap refused frames: \(toTap)")
    }

    @Test func killedPortIsFreedOthersGoOnAndItReattaches() throws {
        let rig = try Rig(ports: ["", "", ""])
        try rig.ping(0, 2)
        let victim = try #require(rig.clients[2])
        _ = try victim.stop(SIGKILL)
        rig.clients[2] = nil
        try waitUntil(5, "port a2 freed") { (try? rig.ports()["a2"]) == nil }
        try rig.ping(0, 1, count: 3, interval: "0.1")
        // The namespace's tap went with its process (non-persistent): a new one, same port name.
        rig.clients[2] = try rig.startClient(2)
        try rig.namespaces[2].address("tap0", "10.78.0.3/24")
        // The new tap has a new MAC: it announces itself by asking first.
        try rig.ping(2, 0, count: 2, interval: "0.1")
        try rig.ping(0, 2, count: 2, interval: "0.1")
        #expect(rig.daemon!.stderr.contains("port vale0:a2 freed"), "no detach logged: \(rig.daemon!.stderr)")
    }

    @Test func secondAttachOfANameIsBusyAndNoDaemonIsAnError() throws {
        let rig = try Rig(ports: [""])
        let dup = try NetbeBinary.run(["connect", "vale0:a0,switch=\(rig.socket)", "dgram,remote=udp:127.0.0.1:9,local=udp:127.0.0.1:0"])
        #expect(dup.status == 1)
        #expect(dup.stderr.contains("busy"), "\(dup.stderr)")
        let none = try NetbeBinary.run(["connect", "vale0:x,switch=\(rig.directory)/none.sock", "dgram,remote=udp:127.0.0.1:9,local=udp:127.0.0.1:0"])
        #expect(none.status == 1)
        #expect(none.stderr.contains("no switch daemon"), "\(none.stderr)")
    }

    @Test func daemonRestartedClientsReattachAndCountNoPeer() throws {
        let rig = try Rig(ports: ["", ""])
        try rig.ping(0, 1)
        _ = try rig.daemon!.stop(SIGTERM)
        rig.daemon = nil
        // Meanwhile frames toward the switch have no peer.
        _ = try? sh(["ip", "netns", "exec", rig.namespaces[0].name, "ping", "-q", "-c", "3", "-i", "0.1", "-W", "1", "10.78.0.2"],
                    allowFailure: true)
        try rig.startDaemon()
        try waitUntil(10, "both clients re-attached") { ((try? rig.ports()) ?? [:]).count == 2 }
        try rig.ping(0, 1, count: 2, interval: "0.1")
        let client = try #require(rig.clients[0])
        #expect(client.stderr.contains("re-attached"), "\(client.stderr)")
        _ = try client.stop(SIGTERM)
        rig.clients[0] = nil
        let counters = try NetbeBinary.counters(client.stdout)
        let toSwitch = try #require(counters.first { ($0["to"] as? String) == "vale0:a0" }, "\(counters)")
        let noPeer = ((toSwitch["drops"] as? [String: Any])?["no_peer"] as? NSNumber)?.uint64Value ?? 0
        #expect(noPeer > 0, "\(toSwitch)")
    }

    @Test func garbageRingIndicesCostOnlyTheirOwnPort() throws {
        let rig = try Rig(ports: ["", ""])
        try rig.ping(0, 1)
        // A client of our own that attaches and scribbles over its ring headers and slots.
        let fd = try SwitchControl.connectForRequests(rig.socket)
        defer { close(fd) }
        let reply = try SwitchControl.request(fd, "attach vale0 evil", device: "evil")
        #expect(reply.fds.count == 3)
        let memory = try SharedRingMemory.attach(fd: reply.fds[0])
        let kick = RingKick(fd: reply.fds[1])
        defer { kick.close(); close(reply.fds[2]) }
        let format = NetmapRingFormatter(transmitRings: 1, receiveRings: 1, slots: SwitchRingPort.slots, bufferSize: SwitchRingPort.bufferSize)
        let ringsStart = 256, ringsEnd = format.size - SwitchRingPort.bufferSize * SwitchRingPort.slots * 2
        var generator = SystemRandomNumberGenerator()
        for round in 0..<50 {
            for offset in stride(from: ringsStart, to: ringsEnd, by: 4) {
                memory.memory.base.storeBytes(of: UInt32.random(in: 0...UInt32.max, using: &generator), toByteOffset: offset, as: UInt32.self)
            }
            try kick.signal()
            if round % 10 == 0 { try rig.ping(0, 1) }
        }
        try rig.ping(0, 1, count: 3, interval: "0.1")
        try rig.ping(1, 0)
        let evil = try #require(try rig.ports()["evil"], "the scribbling port was dropped or the daemon died")
        #expect(((evil["peer_faults"] as? NSNumber)?.uint64Value ?? 0) > 0, "\(evil)")
        #expect(rig.daemon!.isRunning)
    }

    @Test func twoNamespacesShareOneSlirpUplink() throws {
        let web = try LoopbackHTTPServer()
        let rig = try Rig(ports: ["", ""], daemonPorts: ["slirp"], addresses: false)
        let first = try DhcpLease.obtain(in: rig.namespaces[0])
        let second = try DhcpLease.obtain(in: rig.namespaces[1])
        #expect(first.address != second.address, "\(first.line) / \(second.line)")
        #expect(first.router == "10.0.2.2" && second.router == "10.0.2.2")
        for ns in rig.namespaces {
            let file = TrafficRig.tempPath("fetch")
            defer { try? FileManager.default.removeItem(atPath: file) }
            let p = try ns.spawn(["timeout", "10", "busybox", "wget", "-q", "-O", file, "http://10.0.2.2:\(web.port)/\(web.fileName)"])
            #expect(try p.wait(seconds: 15) == 0)
            #expect(FileManager.default.contents(atPath: file) == web.content, "\(ns.name) did not fetch the host's file")
        }
        // And the two reach each other on the shared network.
        let peer = String(second.address.split(separator: "/")[0])
        try rig.namespaces[0].run("ping", "-q", "-c", "2", "-i", "0.2", "-W", "2", peer)
        #expect(try rig.ports()["slirp"] != nil)
    }

    /// `--port passt` (issue 12): a passt child inside the daemon is a port; a namespace on
    /// the switch gets its lease and reaches a host loopback server through it. passt
    /// serves one guest (its address is the one it hands out), so one namespace here.
    @Test func aPasstPortServesANamespace() throws {
        try requireTool("passt", package: "passt")
        let web = try LoopbackHTTPServer()
        let rig = try Rig(ports: [""], daemonPorts: ["passt,net=10.0.2.0/24,ipv6=off"], addresses: false)
        let lease = try DhcpLease.obtain(in: rig.namespaces[0])
        #expect(lease.router == "10.0.2.2", "\(lease.line)")
        let file = TrafficRig.tempPath("fetch")
        defer { try? FileManager.default.removeItem(atPath: file) }
        let p = try rig.namespaces[0].spawn(["timeout", "10", "busybox", "wget", "-q", "-O", file, "http://10.0.2.2:\(web.port)/\(web.fileName)"])
        #expect(try p.wait(seconds: 15) == 0)
        #expect(FileManager.default.contents(atPath: file) == web.content, "the namespace did not fetch the host's file through passt")
        let ports = try rig.ports()
        let port = try #require(ports["passt"], "no port named passt: \(ports.keys.sorted())")
        #expect(((port["frames"] as? NSNumber)?.intValue ?? 0) > 0, "\(port)")
    }
}
