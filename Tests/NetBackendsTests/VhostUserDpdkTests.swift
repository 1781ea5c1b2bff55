import Foundation
import Testing

/// DPDK's virtio-user driver (`dpdk-testpmd --vdev net_virtio_user0`) as a second,
/// independent vhost-user frontend: a polling driver that negotiates VERSION_1, MRG_RXBUF,
/// INDIRECT_DESC and IN_ORDER but never EVENT_IDX. Frames are counted at both ends, each way.
@Suite(.serialized) struct VhostUserDpdkTests {
    static let packages = "dpdk-dev librte-net-vhost23 librte-mempool-ring23 librte-net-virtio23 (--no-install-recommends)"

    /// testpmd on the virtio-user side of `socket`, in `mode`, until stopped with SIGTERM (testpmd prints its totals for either).
    static func testpmd(socket: String, mode: String) throws -> (TestProcess, String) {
        try requireTool("dpdk-testpmd", package: packages)
        let prefix = "nbt-vu-\(getpid())-\(UUID().uuidString.prefix(6))"
        try requireDebianPython()
        // A test runner thread may hold SIGTERM blocked (signalfd tests), and a child inherits
        // the mask: unblock it before testpmd starts, so that it can print its totals and exit.
        let unblock = "import os, signal, sys; signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT, signal.SIGTERM]); "
            + "signal.signal(signal.SIGTERM, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])"
        let p = try TestProcess([debianPython, "-c", unblock, "dpdk-testpmd", "--lcores", "0@1,1@0", "--file-prefix", prefix, "--no-huge", "-m", "256",
                                 "--no-pci", "--vdev", "net_virtio_user0,path=\(socket),queues=1", "--",
                                 "--stats-period", "1", "--forward-mode=\(mode)", "--txpkts=64", "--total-num-mbufs=16384"])
        return (p, prefix)
    }

    /// Runs testpmd for `seconds` once its port is up, stops it, returns its final counter `field`.
    static func run(_ p: TestProcess, prefix: String, seconds: Double, field: String) throws -> Int {
        defer { try? FileManager.default.removeItem(atPath: "/var/run/dpdk/\(prefix)") }
        try waitUntil(30, "testpmd to start forwarding") {
            if !p.isRunning { throw TestFailure("testpmd exited: \(p.stdout.suffix(2000)) \(p.stderr.suffix(2000))") }
            return p.stdout.contains("Press enter to exit") || p.stdout.contains("Port statistics")
        }
        usleep(UInt32(seconds * 1_000_000))
        _ = try p.stop(SIGTERM, seconds: 15)
        // The last "FIELD: N" printed: testpmd's totals at exit.
        let values = p.stdout.components(separatedBy: "\(field): ").dropFirst().compactMap { Int($0.prefix { $0.isNumber }) }
        guard let last = values.last else { throw TestFailure("no \(field) in testpmd's output: \(p.stdout.suffix(2000))") }
        return last
    }

    @Test(.timeLimit(.minutes(1))) func framesFromTestpmdReachNetbe() throws {
        let sock = TestSocketPath("vud")
        let netbe = try NetbeBinary.start(["connect", "vhost-user,socket=\(sock.path)", "null"])
        let (pmd, prefix) = try Self.testpmd(socket: sock.path, mode: "txonly")
        let sent = try Self.run(pmd, prefix: prefix, seconds: 2, field: "TX-packets")
        #expect(try netbe.stop() == 0)
        let counters = try NetbeBinary.counters(netbe.stdout)
        let got = counters.first { ($0["from"] as? String) == sock.path }?["frames"] as? Int ?? 0
        // A stalled ring (a kick the driver never sent) stops at a few ring-fulls: ~12k frames.
        #expect(got > 200_000, "netbe kept taking testpmd's frames: \(counters)")
        // What testpmd counts as sent is in the ring; at most a ring's worth was not taken yet.
        #expect(got <= sent && got >= sent - 1024, "testpmd sent \(sent), netbe got \(got)")
        #expect(netbe.stderr.contains("IN_ORDER"), "virtio-user negotiated IN_ORDER: \(netbe.stderr.suffix(1500))")
    }

    @Test(.timeLimit(.minutes(1))) func framesFromNetbeReachTestpmd() throws {
        let sock = TestSocketPath("vud")
        let netbe = try NetbeBinary.start(["connect", "vhost-user,socket=\(sock.path)", "null,generate=64"])
        let (pmd, prefix) = try Self.testpmd(socket: sock.path, mode: "rxonly")
        let received = try Self.run(pmd, prefix: prefix, seconds: 2, field: "RX-packets")
        #expect(try netbe.stop() == 0)
        let counters = try NetbeBinary.counters(netbe.stdout)
        let sent = counters.first { ($0["to"] as? String) == sock.path }?["frames"] as? Int ?? 0
        #expect(received > 200_000, "testpmd kept receiving netbe's frames: \(received); netbe: \(counters)")
        // Frames still in the ring, or taken by the driver after its last count, when testpmd stopped.
        #expect(sent >= received && Double(sent) <= Double(received) * 1.02 + 1024, "netbe put \(sent) frames in the ring, testpmd counted \(received)")
    }
}
