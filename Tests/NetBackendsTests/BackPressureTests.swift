import Foundation
import NetBackends
import Testing

/// Back-pressure instead of loss (the first point), through `Relay`: a tap
/// joined to a datagram socket whose reader stalls. The sink says would-block, the
/// relay holds the frame and stops reading the tap, the loop idles instead of spinning,
/// and once the reader drains every frame arrives, in order, none dropped.
@Suite struct BackPressureTests {
    @Test(.timeLimit(.minutes(1)))
    func stalledSinkHoldsFramesWithoutLossOrSpinning() throws {
        let f = try TapFixture()
        let pair = try DatagramPairBackend(loop: f.loop)
        defer { pair.close() }
        let rounds = Locked(0)
        f.loop.addBeforeWaitHook { _ in rounds.withLock { $0 += 1 } }
        let relay = try Relay(f.tap, pair)
        let lt = try LoopThread(f.loop)
        try lt.sync { relay.start() }
        try f.addStaticNeighbour()

        // 300 numbered datagrams: fewer than the tap's queue holds, so the kernel drops none.
        let count = 300
        try requireDebianPython()
        let sender = try f.ns.spawn([debianPython, "-c", """
            import socket
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for i in range(\(count)):
                s.sendto(b"seq %06d " % i + b"x" * 989, ("10.66.0.2", 9))
            """])
        #expect(try sender.wait(seconds: 10) == 0, "sender: \(sender.stderr)")

        // The socket's queue fills after a few frames; the relay must then be holding.
        try waitUntil(3, "the relay to stall") {
            let a = relay.forward.statistics.frames
            usleep(100_000)
            return a > 0 && relay.forward.statistics.frames == a
        }
        let stalledAt = relay.forward.statistics.frames
        #expect(stalledAt < UInt64(count), "the sink never pushed back (\(stalledAt) frames went through)")
        let before = rounds.current
        usleep(300_000)
        let idle = rounds.current - before
        #expect(idle <= 5, "the loop went round \(idle) times in 300 ms while the sink was full")

        // Drain: every datagram arrives, in order.
        var sequence: [Int] = []
        var buffer = [UInt8](repeating: 0, count: 2048)
        let deadline = Date().addingTimeInterval(10)
        while sequence.count < count && Date() < deadline {
            let n = recv(pair.peer, &buffer, buffer.count, 0)
            if n < 0 { usleep(500); continue }
            let frame = Frames.Parsed(bytes: Array(buffer[0..<n]))
            guard frame.isIPv4, frame.ipProtocol == 17 else { continue }
            let text = String(decoding: frame.l4.dropFirst(8).prefix(10), as: UTF8.self)
            if text.hasPrefix("seq "), let i = Int(text.dropFirst(4).prefix(6)) { sequence.append(i) }
        }
        #expect(sequence == Array(0..<count), "got \(sequence.count) of \(count) frames, in order: \(sequence == sequence.sorted())")
        try lt.sync { relay.stop() }
        #expect(relay.forward.statistics.totalDrops == 0)
        #expect(relay.forward.statistics.frames == UInt64(count))
        #expect(try lt.stop() == nil)
    }
}
