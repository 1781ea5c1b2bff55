import Foundation
import NetBackends
import Testing

/// `netbe connect` between two namespaces, driven as a user drives it: two taps, real
/// TCP through the kernel on both sides, counters read from the JSON netbe prints.
@Suite(.serialized) struct ConnectTests {
    enum Family: String, CaseIterable, CustomTestStringConvertible {
        case ipv4, ipv6
        var testDescription: String { rawValue }
        func address(_ host: Int) -> String { self == .ipv4 ? "10.88.0.\(host)" : "fd00:88::\(host)" }
    }

    static let megabytes64 = 64 << 20

    /// Namespaces A and B, each with a tap that `netbe connect` created, addressed
    /// 10.88.0.1/24 + fd00:88::1/64 (A) and .2 / ::2 (B).
    final class Joined {
        let a: TestNamespace
        let b: TestNamespace
        private(set) var netbe: TestProcess?

        init(a optionsA: String = "", b optionsB: String = "", extra: [String] = []) throws {
            try requireDebianPython()
            try requireTool("ping", package: "iputils-ping")
            a = try TestNamespace("A")
            b = try TestNamespace("B")
            netbe = try NetbeBinary.start(["connect", "tap0,netns=\(a.name)\(optionsA)", "tap0,netns=\(b.name)\(optionsB)"] + extra)
            for (ns, host) in [(a, 1), (b, 2)] {
                try sh("ip", "-n", ns.name, "addr", "add", "10.88.0.\(host)/24", "dev", "tap0")
                try sh("ip", "-n", ns.name, "addr", "add", "fd00:88::\(host)/64", "dev", "tap0", "nodad")
                try sh("ip", "-n", ns.name, "link", "set", "tap0", "up")
                try ns.waitCarrier("tap0")
            }
        }

        deinit {
            netbe = nil        // killed by PID before its namespaces go
            a.delete()
            b.delete()
        }

        var process: TestProcess { netbe! }

        /// Stops netbe with `sig`; returns its exit status and its JSON objects.
        func stop(_ sig: Int32 = SIGTERM) throws -> (status: Int32, counters: [[String: Any]]) {
            let status = try process.stop(sig)
            return (status, try NetbeBinary.counters(process.stdout))
        }

        /// The counters of the direction read from `ns`'s tap.
        func direction(from ns: TestNamespace, in counters: [[String: Any]]) throws -> [String: Any] {
            try #require(counters.first { $0["from"] as? String == "\(ns.name):tap0" }, "no direction from \(ns.name) in \(counters)")
        }
    }

    // A missing or non-numeric counter reads as a huge value, so that it fails any check.
    static func number(_ o: [String: Any], _ key: String) -> UInt64 { (o[key] as? NSNumber)?.uint64Value ?? .max }
    static func drops(_ o: [String: Any]) -> UInt64 {
        ((o["drops"] as? [String: Any]) ?? [:]).values.reduce(0) { $0 + (($1 as? NSNumber)?.uint64Value ?? .max / 4) }
    }

    private func transfer(_ j: Joined, from: TestNamespace, to: TestNamespace, _ family: Family, bytes: Int = megabytes64, port: Int = 5201) throws {
        let host = family.address(to === j.a ? 1 : 2)
        let r = try TcpTransfer.run(from: from, to: to, host: host, port: port, bytes: bytes, seed: 1234)
        #expect(r.sent == r.received, "sha256 differs over \(family): sent \(r.sent), received \(r.received)")
    }

    // Offloads on both sides: TSO super-frames cross whole.
    @Test(arguments: Family.allCases)
    func offloadsOnBothSidesCarryGSOFrames(_ family: Family) throws {
        let j = try Joined()
        try transfer(j, from: j.a, to: j.b, family)
        let (status, counters) = try j.stop()
        #expect(status == 0, "netbe: \(j.process.stderr)")
        #expect(counters.count == 2)
        let bulk = try j.direction(from: j.a, in: counters)
        #expect(Self.number(bulk, "gso_frames") > 0, "no GSO frame crossed A->B: \(bulk)")
        #expect(Self.number(bulk, "bytes") >= UInt64(Self.megabytes64))
        for d in counters { #expect(Self.drops(d) == 0, "\(d)") }
    }

    // A 10-byte header side and a 12-byte one: the relay converts headers both ways.
    @Test(arguments: Family.allCases)
    func tenByteHeaderSideJoinedToTwelveByteSide(_ family: Family) throws {
        let j = try Joined(a: ",hdrlen=10")
        try transfer(j, from: j.a, to: j.b, family)
        try transfer(j, from: j.b, to: j.a, family, port: 5202)
        let (status, counters) = try j.stop()
        #expect(status == 0, "netbe: \(j.process.stderr)")
        for d in counters {
            #expect(Self.number(d, "gso_frames") > 0, "offloads still apply with mixed header lengths: \(d)")
            #expect(Self.drops(d) == 0, "\(d)")
        }
    }

    // An offloading side joined to a side without a header: the offloading tap still hands
    // out TSO super-frames (one read per 64 KiB), and the relay cuts each into wire
    // segments for the plain side, as the kernel would for a device without TSO; the
    // other way, the plain side's segments are joined into super-frames for the tap.
    // Every byte must arrive (sha256), nothing be dropped, each GSO frame be counted cut.
    @Test(arguments: Family.allCases)
    func offloadingSideJoinedToPlainSideIsCutInSoftware(_ family: Family) throws {
        let j = try Joined(b: ",vnet=off")
        try transfer(j, from: j.a, to: j.b, family)
        try transfer(j, from: j.b, to: j.a, family, bytes: 16 << 20, port: 5202)
        let (status, counters) = try j.stop()
        #expect(status == 0, "netbe: \(j.process.stderr)")
        let fromOffloading = try j.direction(from: j.a, in: counters)
        let gso = Self.number(fromOffloading, "gso_frames")
        #expect(gso > 0, "no super-frame was read from the offloading tap: \(fromOffloading)")
        #expect(Self.number(fromOffloading, "sw_segmented") == gso, "every super-frame for the plain side is cut: \(fromOffloading)")
        #expect(Self.number(fromOffloading, "bytes") >= UInt64(Self.megabytes64))
        let fromPlain = try j.direction(from: j.b, in: counters)
        #expect(Self.number(fromPlain, "sw_segmented") == 0, "nothing to cut from the plain side: \(fromPlain)")
        #expect(Self.number(fromPlain, "gso_frames") > 0, "the plain side's segments should reach the tap joined: \(fromPlain)")
        for d in counters { #expect(Self.drops(d) == 0, "\(d)") }
    }

    // `offload=off`: that tap keeps its header but is asked for no offloads, so nothing
    // GSO is read from it or written to it: the other side's super-frames are cut for it,
    // and its segments are joined for the other side.
    @Test func offloadOffSideReadsNoGSOAndIsHandedOnlySegments() throws {
        let j = try Joined(a: ",offload=off")
        try transfer(j, from: j.a, to: j.b, .ipv4, bytes: 16 << 20)
        try transfer(j, from: j.b, to: j.a, .ipv6, bytes: 16 << 20, port: 5202)
        let (status, counters) = try j.stop()
        #expect(status == 0, "netbe: \(j.process.stderr)")
        let fromOff = try j.direction(from: j.a, in: counters)
        #expect(Self.number(fromOff, "sw_segmented") == 0, "nothing GSO read from the offload=off tap: \(fromOff)")
        #expect(Self.number(fromOff, "gso_frames") > 0, "its segments should reach the other tap joined: \(fromOff)")
        let toOff = try j.direction(from: j.b, in: counters)
        #expect(Self.number(toOff, "sw_segmented") == Self.number(toOff, "gso_frames"), "\(toOff)")
        #expect(Self.number(toOff, "gso_frames") > 0, "the offloading side should hand out super-frames: \(toOff)")
        for d in counters { #expect(Self.drops(d) == 0, "\(d)") }
    }

    @Test func badSecondSpecExitsTwoAndRemovesTheFirstTap() throws {
        let a = try TestNamespace("A")
        let r = try NetbeBinary.run(["connect", "tap0,netns=\(a.name)", "tap1,netns=\(a.name),bogus=1"])
        #expect(r.status == 2, "stderr: \(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1 && r.stderr.contains("bogus"), "stderr: \(r.stderr)")
        #expect(!r.stdout.contains("ready"))
        #expect(try sh(["ip", "-n", a.name, "link", "show", "tap0"], allowFailure: true).isEmpty, "the first tap was left behind")
    }

    // --pcap holds exactly the frames netbe relayed.
    @Test func pcapHoldsEveryRelayedFrame() throws {
        try requireTool("tcpdump", package: "tcpdump")
        let pcap = FileManager.default.temporaryDirectory.appendingPathComponent("nbt-\(getpid())-connect.pcap").path
        defer { try? FileManager.default.removeItem(atPath: pcap) }
        let j = try Joined(extra: ["--pcap", pcap])
        try sh("ip", "netns", "exec", j.a.name, "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.88.0.2")
        try transfer(j, from: j.a, to: j.b, .ipv4, bytes: 8 << 20)
        try transfer(j, from: j.b, to: j.a, .ipv6, bytes: 8 << 20, port: 5202)
        let (status, counters) = try j.stop()
        #expect(status == 0, "netbe: \(j.process.stderr)")
        let relayed = counters.reduce(0) { $0 + Self.number($1, "frames") }
        let listing = try sh("tcpdump", "-r", pcap, "-nn", "-q", "-t")
        let inFile = listing.split(separator: "\n").count
        #expect(relayed > 0)
        #expect(UInt64(inFile) == relayed, "tcpdump counts \(inFile) frames in the pcap, netbe relayed \(relayed)")
    }

    // A receiver SIGSTOPped mid-transfer while the other direction keeps flowing.
    @Test func stoppedReceiverHoldsOneFlowWhileTheOtherDirectionFlows() throws {
        let j = try Joined()
        let slowServer = try TcpTransfer.server(in: j.b, host: "10.88.0.2", port: 5301, progressAfter: 4 << 20)
        let slowClient = try TcpTransfer.client(in: j.a, host: "10.88.0.2", port: 5301, bytes: Self.megabytes64, seed: 77)
        try slowServer.waitForLine("progress", seconds: 30)
        slowServer.signal(SIGSTOP)
        defer { slowServer.signal(SIGCONT) }
        // The stopped receiver's window closes; the other direction must keep working.
        try transfer(j, from: j.b, to: j.a, .ipv4, bytes: 16 << 20, port: 5302)
        try sh("ip", "netns", "exec", j.a.name, "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.88.0.2")
        #expect(slowClient.isRunning, "64 MiB cannot have completed into a stopped receiver")
        slowServer.signal(SIGCONT)
        let sent = try TcpTransfer.result(slowClient, "sent")
        let received = try TcpTransfer.result(slowServer, "received")
        #expect(received.bytes == Self.megabytes64)
        #expect(sent.sha256 == received.sha256)
        let (status, counters) = try j.stop()
        #expect(status == 0, "netbe: \(j.process.stderr)")
        for d in counters { #expect(Self.drops(d) == 0, "\(d)") }
    }

    // A tap deleted underneath: exit 1, promptly, without burning CPU.
    // Deleting the namespace instead would not do: an open tap descriptor keeps its
    // namespace alive (seen here: netbe keeps running), `ip netns del` only drops the name.
    @Test func deletedTapMakesNetbeExitOneWithoutSpinning() throws {
        let j = try Joined()
        let pid = j.process.pid
        let before = try Self.cpuTicks(pid)
        try sh("ip", "-n", j.a.name, "link", "del", "tap0")
        let start = Date()
        var last = before
        while j.process.isRunning && Date().timeIntervalSince(start) < 5 {
            if let t = try? Self.cpuTicks(pid) { last = t }
            usleep(20_000)
        }
        let elapsed = Date().timeIntervalSince(start)
        let status = try j.process.wait(seconds: 1)
        #expect(status == 1, "netbe exited \(status) after its tap was deleted: \(j.process.stderr)")
        #expect(elapsed < 3, "netbe took \(elapsed) s to notice its tap was deleted")
        let ticks = last - before
        #expect(ticks < 20, "netbe used \(ticks) clock ticks of CPU after its tap was deleted (busy loop?)")
        let lines = j.process.stderr.split(separator: "\n").filter { $0.contains(" error ") && $0.contains("\(j.a.name):tap0") }
        #expect(lines.count == 1, "want one error line naming the vanished tap: \(j.process.stderr)")
        // The other side's tap, created by netbe, went with it.
        #expect(try sh(["ip", "-n", j.b.name, "link", "show", "tap0"], allowFailure: true).isEmpty)
    }

    @Test func downTapCountsDropsAndNetbeKeepsGoing() throws {
        let j = try Joined()
        try sh("ip", "-n", j.b.name, "link", "set", "tap0", "down")
        // A's frames towards B now fail to be written into B's tap.
        _ = try sh(["ip", "netns", "exec", j.a.name, "ping", "-c", "3", "-i", "0.2", "-W", "1", "10.88.0.2"], allowFailure: true)
        #expect(j.process.isRunning, "netbe died on a down tap: \(j.process.stderr)")
        try sh("ip", "-n", j.b.name, "link", "set", "tap0", "up")
        try j.b.waitCarrier("tap0")
        try sh("ip", "netns", "exec", j.a.name, "ping", "-c", "2", "-i", "0.2", "-W", "2", "10.88.0.2")
        let (status, counters) = try j.stop()
        #expect(status == 0, "netbe: \(j.process.stderr)")
        let towardsB = try j.direction(from: j.a, in: counters)
        let linkDown = ((towardsB["drops"] as? [String: Any])?["link_down"] as? NSNumber)?.intValue ?? 0
        #expect(linkDown >= 3, "writes into a down tap count as link_down drops: \(towardsB)")
    }

    @Test func droppedPrivilegesKeepTheTapsWorking() throws {
        guard getpwnam("nobody") != nil else { throw TestFailure("no user 'nobody' on this host") }
        let j = try Joined(extra: ["--user", "nobody"])
        let status = try String(contentsOfFile: "/proc/\(j.process.pid)/status", encoding: .utf8)
        let uid = status.split(separator: "\n").first { $0.hasPrefix("Uid:") } ?? ""
        // real, effective, saved and filesystem uid (proc(5))
        #expect(uid.split(separator: "\t").dropFirst().map(String.init) == Array(repeating: "65534", count: 4), "netbe runs as: \(uid)")
        try sh("ip", "netns", "exec", j.a.name, "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.88.0.2")
        let (code, counters) = try j.stop()
        #expect(code == 0, "netbe: \(j.process.stderr)")
        #expect(counters.count == 2)
        for ns in [j.a, j.b] {
            #expect(try sh(["ip", "-n", ns.name, "link", "show", "tap0"], allowFailure: true).isEmpty)
        }
    }

    /// utime + stime of `pid` in clock ticks (proc(5), fields 14 and 15).
    static func cpuTicks(_ pid: Int32) throws -> Int {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        guard let close = stat.lastIndex(of: ")") else { throw TestFailure("bad /proc/\(pid)/stat") }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // fields[0] is field 3 (state): utime is field 14, stime 15.
        guard fields.count > 13, let u = Int(fields[11]), let s = Int(fields[12]) else { throw TestFailure("bad /proc/\(pid)/stat: \(stat)") }
        return u + s
    }

    // SIGINT/SIGTERM: exit 0 and one JSON object of counters per direction.
    @Test(arguments: [SIGINT, SIGTERM])
    func signalStopsWithCountersAsJSON(_ sig: Int32) throws {
        let j = try Joined()
        try sh("ip", "netns", "exec", j.a.name, "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.88.0.2")
        let (status, counters) = try j.stop(sig)
        #expect(status == 0, "netbe exited \(status) on signal \(sig): \(j.process.stderr)")
        let lines = j.process.stdout.split(separator: "\n")
        #expect(lines.first == "ready")
        #expect(counters.count == 2, "one JSON object per direction: \(j.process.stdout)")
        for d in counters {
            for key in ["frames", "bytes", "gso_frames", "sw_segmented", "drops"] {
                #expect(d[key] != nil, "no '\(key)' in \(d)")
            }
            #expect(d["drops"] is [String: Any])
            #expect(Self.number(d, "frames") >= 3, "three pings each way at least: \(d)")
        }
        // netbe removed the taps it created.
        for ns in [j.a, j.b] {
            #expect(try sh(["ip", "-n", ns.name, "link", "show", "tap0"], allowFailure: true).isEmpty)
        }
    }
}
