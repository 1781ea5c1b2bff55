import CNetBackends
import Foundation
import NetBackends
import Testing

/// Every drop counted and reported: a frame a backend took (`.sent`) and lost afterwards
/// never reached the relay as a drop result, yet it must be in the direction's `drops`
/// (what `netbe` prints). Here a seqpacket socket whose send buffer is smaller than the
/// frame refuses it with EMSGSIZE when the batch is written (as a joined super-frame too
/// big for the helper's socket would be).
@Suite struct DropReportTests {
    @Test(.timeLimit(.minutes(1))) func frameRefusedWithEMSGSIZEAfterSendIsReported() throws {
        let loop = try NetEventLoop()
        var fds: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, cnb_SOCK_SEQPACKET | cnb_SOCK_NONBLOCK | cnb_SOCK_CLOEXEC, 0, &fds) == 0)
        defer { close(fds[1]) }
        let source = try DatagramPairBackend(loop: loop)
        let sink = try SeqpacketBackend(spec: try BackendSpec(parsing: "seqpacket"), kind: "seqpacket", name: "seqpacket",
                                        fd: fds[0], eventLoop: loop)
        defer { source.close(); sink.close() }
        // After the backend asked for its 4 MiB: a small buffer makes a 20 kB message too long.
        var small: Int32 = 4096
        #expect(setsockopt(sink.fd, SOL_SOCKET, SO_SNDBUF, &small, socklen_t(MemoryLayout<Int32>.size)) == 0)
        let relay = try Relay(source, sink)
        let lt = try LoopThread(loop)
        try lt.sync { relay.start() }
        let big = OffloadTests.segment(seq: 1, payload: OffloadTests.payload(20_000, seed: 1))
        let fine = OffloadTests.segment(seq: 1, payload: OffloadTests.payload(100, seed: 2))
        for f in [big, fine] {
            #expect(f.withUnsafeBytes { send(source.peer, $0.baseAddress, $0.count, 0) } == f.count)
        }
        var buffer = [UInt8](repeating: 0, count: 70_000)
        var got: [Int] = []
        try waitUntil(5, "the small frame at the seqpacket peer") {
            let n = recv(fds[1], &buffer, buffer.count, cnb_MSG_DONTWAIT)
            if n > 0 { got.append(n) }
            return got.contains(fine.count)
        }
        try lt.sync { relay.stop() }
        #expect(try lt.stop() == nil)
        #expect(!got.contains(big.count))
        let drops = Dictionary(uniqueKeysWithValues: relay.forward.dropsByReason.map { ($0.0.description, $0.1) })
        #expect(drops["oversized"] == 1, "\(drops)")
        #expect(drops.values.reduce(0, +) == 1, "\(drops)")
    }

    /// Drops inside the slirp helper process reach netbe, which has the report: a message
    /// too short to be a frame (and no control message) and one longer than any frame,
    /// written into the helper's socket from netbe's end, come back as `truncated` and
    /// `oversized` drops of the frames netbe sent (the helper's `D` reports).
    @Test(.timeLimit(.minutes(1))) func helperReportsItsOwnDrops() throws {
        SlirpHelperBackend.executable = try NetbeBinary.path
        let loop = try NetEventLoop()
        let helper = try BackendRegistry.shared.open("slirp", on: loop)
        defer { helper.close() }
        try helper.setCapabilities([], vnetHeaderLength: 0)
        helper.setReceiveHandler {
            while true {
                guard let r = try? helper.discardReceived(), r != .empty else { return }
            }
        }
        let lt = try LoopThread(loop)
        try lt.sync { helper.enableReceive() }
        let fd = try #require((helper as? SeqpacketBackend)?.fd)
        let short = [UInt8](repeating: 0x51, count: 5)
        let long = [UInt8](repeating: 0, count: maximumFrameLength + 12 + 100)
        for m in [short, long] {
            #expect(m.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, cnb_MSG_NOSIGNAL) } == m.count)
        }
        try waitUntil(10, "the helper's drop reports") {
            try lt.sync { helper.statistics.lostAfterSend(.truncated) == 1 && helper.statistics.lostAfterSend(.oversized) == 1 }
        }
        try lt.sync { helper.disableReceive() }
        #expect(try lt.stop() == nil)
    }

    /// libslirp's output waits in a bounded queue for the frontend: a frontend that does
    /// not read loses frames there, counted as `queue_full` in the direction out of slirp.
    /// Here every ARP request to the gateway gets a reply that nobody reads.
    @Test func slirpQueueOverflowIsCounted() throws {
        let loop = try NetEventLoop()
        let slirp = try BackendRegistry.shared.open("slirp,helper=off", on: loop)
        defer { slirp.close() }
        try slirp.setCapabilities([], vnetHeaderLength: 0)
        let arp = TestFrames.arpRequest(from: [10, 0, 2, 15], for: [10, 0, 2, 2])
        for _ in 0..<5000 { _ = try arp.withUnsafeBytes { try slirp.send($0) } }
        let lost = slirp.statistics.lostBeforeReceive(.queueFull)
        #expect(lost > 0, "5000 replies fit in the queue? nothing was counted")
        var delivered = 0
        while case .frame = try slirp.discardReceived() { delivered += 1 }
        #expect(delivered > 0 && UInt64(delivered) + lost == 5000, "delivered \(delivered), lost \(lost)")
    }
}
