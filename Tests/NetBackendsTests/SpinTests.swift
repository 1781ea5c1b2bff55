import CNetBackends
import Foundation
import NetBackends
import Testing

/// No spinning: a listener that cannot accept for want of descriptors backs off instead
/// of waking at once again, and a tap deleted under a frontend loop written as in the
/// README does not make that loop go round at full speed.
@Suite struct SpinTests {
    /// utime + stime of `pid` in clock ticks (/proc/PID/stat fields 14 and 15).
    static func cpuTicks(_ pid: Int32) throws -> Int {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        guard let close = stat.lastIndex(of: ")") else { throw TestFailure("bad /proc/\(pid)/stat") }
        let f = stat[stat.index(after: close)...].split(separator: " ")
        guard f.count > 13, let u = Int(f[11]), let s = Int(f[12]) else { throw TestFailure("bad /proc/\(pid)/stat") }
        return u + s
    }

    /// The lowest descriptor number `pid` does not use: the next one it would get.
    static func lowestFreeDescriptor(_ pid: Int32) throws -> Int {
        let used = Set(try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").compactMap { Int($0) })
        return (0...).first { !used.contains($0) }!
    }

    @Test(.timeLimit(.minutes(1)))
    func acceptOutOfDescriptorsBacksOffAndRecovers() throws {
        try requireTool("prlimit", package: "util-linux")
        let sockPath = TrafficRig.tempPath("emfile.sock")
        let local = TrafficRig.tempPath("emfile-a")
        let peer = try RawDgramClient(boundAt: TrafficRig.tempPath("emfile-b"))
        let netbe = try NetbeBinary.start(["connect", "stream,listen=unix:\(sockPath)",
                                           "dgram,local=unix:\(local),remote=unix:\(peer.path)"])
        defer { _ = try? netbe.stop(SIGKILL) }
        // From now on netbe cannot open one more descriptor: accept fails with EMFILE.
        let limit = try Self.lowestFreeDescriptor(netbe.pid)
        try sh("prlimit", "--pid", String(netbe.pid), "--nofile=\(limit):")
        let client = try RawStreamClient(unixPath: sockPath)   // completes in the backlog
        usleep(300_000)
        let before = try Self.cpuTicks(netbe.pid)
        usleep(1_000_000)
        let used = try Self.cpuTicks(netbe.pid) - before
        let ticksPerSecond = sysconf(Int32(_SC_CLK_TCK))
        #expect(used * 100 <= 10 * ticksPerSecond, "netbe used \(used) of \(ticksPerSecond) clock ticks in 1 s while accept failed (EMFILE): it spins")
        let warnings = netbe.stderr.split(separator: "\n").filter { $0.contains("accept") }.count
        #expect(warnings >= 1 && warnings <= 2, "accept failures logged \(warnings) times (once expected): \(netbe.stderr.suffix(500))")
        // Descriptors again: the listener is retried on its timer and takes the peer.
        try sh("prlimit", "--pid", String(netbe.pid), "--nofile=1024:")
        let frame = TestFrames.arpRequest(from: [10, 9, 0, 2], for: [10, 9, 0, 1])
        try client.sendFrame(frame)
        var buf = [UInt8](repeating: 0, count: 2048)
        var got = -1
        let deadline = Date().addingTimeInterval(5)
        while got != frame.count && Date() < deadline {
            got = recv(peer.fd, &buf, buf.count, 0)   // 300 ms receive timeout
        }
        #expect(got == frame.count, "the peer's frame did not come through once descriptors were available again")
    }

    /// The README's frontend loop (`while case .frame = try? tap.receive(...)`) on a tap
    /// whose interface is deleted: the device's errors must stop the backend watching it,
    /// so that the loop thread idles instead of being called at full speed.
    @Test(.timeLimit(.minutes(1)))
    func vanishedTapDoesNotSpinTheReadmeLoop() throws {
        let ns = try TestNamespace("spin")
        let loop = try NetEventLoop()
        let tap = try BackendRegistry.shared.open("tap0,netns=\(ns.name)", on: loop)
        defer { tap.close() }
        try tap.setCapabilities([], vnetHeaderLength: 0)
        let frame = FrameBuffer()
        let calls = Locked(0)
        tap.setReceiveHandler { [unowned tap] in
            calls.withLock { $0 += 1 }
            while case .frame = try? tap.receive(into: frame) {}
        }
        tap.enableReceive()
        let lt = try LoopThread(loop)
        defer { _ = try? lt.stop() }
        let thread = try lt.sync { pthread_self() }
        var clock = clockid_t()
        #expect(pthread_getcpuclockid(thread, &clock) == 0)
        func cpuSeconds() -> Double {
            var ts = timespec()
            clock_gettime(clock, &ts)
            return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
        }
        try sh("ip", "-n", ns.name, "link", "del", "tap0")
        ns.delete()
        usleep(200_000)
        let cpu0 = cpuSeconds(), calls0 = calls.current
        usleep(1_000_000)
        let cpu = cpuSeconds() - cpu0, n = calls.current - calls0
        #expect(cpu < 0.1, "the loop thread used \(cpu) s of CPU in 1 s after the tap vanished (\(n) handler calls)")
        #expect(n < 20, "the receive handler was called \(n) times in 1 s after the tap vanished")
        #expect(try lt.sync { "alive" } == "alive")
    }
}
