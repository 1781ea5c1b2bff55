import CNetBackends
import Foundation
import NetBackends
import Testing

/// Bounded work per wake-up: one TSO frame with the smallest `gso_size` accepted (48) is
/// over a thousand segments. The relay cuts at most `cutLimit` of them per wake-up and
/// then lets the loop run the other direction, resuming the cut in a later round (as it
/// resumes under back-pressure); a frame that waits the other way is not held up behind
/// the whole cut.
@Suite struct RelayYieldTests {
    /// A plain backend that takes every frame at once (never blocks) and records, for each
    /// one, what `observe` says; frames for the relay come from a socketpair (`peer`).
    final class RecordingBackend: NetBackend, @unchecked Sendable {
        private var fd: Int32
        private(set) var peer: Int32
        var observe: @Sendable () -> UInt64 = { 0 }
        private(set) var seen: [UInt64] = []

        init(loop: NetEventLoop) throws {
            var fds: [Int32] = [-1, -1]
            guard socketpair(AF_UNIX, cnb_SOCK_DGRAM | cnb_SOCK_NONBLOCK | cnb_SOCK_CLOEXEC, 0, &fds) == 0 else {
                throw SystemCallError(call: "socketpair", device: "recording", errno: errno)
            }
            fd = fds[0]
            peer = fds[1]
            super.init(spec: try BackendSpec(parsing: "recording"), kind: "recording", name: "recording", eventLoop: loop)
            try watch(fd: fd)
        }

        deinit { close() }

        override func send(_ frame: UnsafeBufferPointer<iovec>, more: Bool) throws(NetBackendError) -> SendResult {
            seen.append(observe())
            return .sent(IOVectors.length(of: frame))
        }

        override func receive(into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> ReceiveResult {
            let n = Glibc.readv(fd, buffers.baseAddress, Int32(buffers.count))
            if n < 0 { return .empty }
            return .frame(length: n)
        }

        override func close() {
            super.close()
            if fd >= 0 { _ = Glibc.close(fd); fd = -1 }
            if peer >= 0 { _ = Glibc.close(peer); peer = -1 }
        }
    }

    @Test(.timeLimit(.minutes(1))) func longCutYieldsToTheOtherDirection() throws {
        let loop = try NetEventLoop()
        let tapLike = try DatagramPairBackend(loop: loop, headerLength: 12, offloads: [.guestCsum, .guestTSO4, .csum, .hostTSO4])
        let plain = try RecordingBackend(loop: loop)
        defer { tapLike.close(); plain.close() }
        let relay = try Relay(tapLike, plain)
        relay.forward.cutLimit = 16
        let backward = relay.backward.statistics
        // Each segment the plain side takes notes how many frames went the other way so far.
        plain.observe = { backward.frames }
        let lt = try LoopThread(loop)
        try lt.sync { relay.start() }

        let mss = TCPSegmenter.minimumSegmentSize
        let segments = 1200
        let superFrame = OffloadTests.segment(seq: 1, payload: OffloadTests.payload(mss * segments, seed: 3), id: 1)
        var header = [UInt8](repeating: 0, count: 12)
        header.withUnsafeMutableBytes {
            VirtioNetHeader(flags: .needsCsum, gsoType: .tcpv4, headerLength: 54, gsoSize: UInt16(mss),
                            csumStart: 34, csumOffset: 16).encode(into: $0)
        }
        let datagram = header + superFrame
        let reply = OffloadTests.segment(seq: 9, payload: [1, 2, 3])
        let tapPeer = tapLike.peer, plainPeer = plain.peer
        // Both wait before the loop looks again: the next round has both directions ready.
        let queued = try lt.sync {
            let a = datagram.withUnsafeBytes { send(tapPeer, $0.baseAddress, $0.count, 0) }
            let b = reply.withUnsafeBytes { send(plainPeer, $0.baseAddress, $0.count, 0) }
            return a == datagram.count && b == reply.count
        }
        #expect(queued)
        var reached = false
        var buffer = [UInt8](repeating: 0, count: 2048)
        try waitUntil(10, "the reply at the tap side") {
            if recv(tapPeer, &buffer, buffer.count, cnb_MSG_DONTWAIT) > 0 { reached = true }
            return reached
        }
        try waitUntil(10, "every segment at the plain side") { try lt.sync { plain.seen.count } >= segments }
        try lt.sync { relay.stop() }
        #expect(try lt.stop() == nil)
        let seen = plain.seen
        #expect(seen.count == segments)
        let before = seen.firstIndex { $0 > 0 } ?? seen.count
        #expect(before <= 2 * relay.forward.cutLimit,
                "\(before) segments were cut before the other direction ran (limit \(relay.forward.cutLimit) per wake-up)")
        let stats = relay.forward.statistics
        #expect(stats.softwareSegmented == 1 && stats.frames == 1 && stats.totalDrops == 0,
                "cut \(stats.softwareSegmented) frames \(stats.frames) drops \(stats.totalDrops)")
    }

    /// A frame whose gso_size no TCP sender uses is malformed, counted, never cut.
    @Test(.timeLimit(.minutes(1))) func tinySegmentSizeIsMalformed() throws {
        let loop = try NetEventLoop()
        let tapLike = try DatagramPairBackend(loop: loop, headerLength: 12, offloads: [.guestCsum, .guestTSO4])
        let plain = try RecordingBackend(loop: loop)
        defer { tapLike.close(); plain.close() }
        let relay = try Relay(tapLike, plain)
        let lt = try LoopThread(loop)
        try lt.sync { relay.start() }
        let superFrame = OffloadTests.segment(seq: 1, payload: OffloadTests.payload(60_000, seed: 3), id: 1)
        var header = [UInt8](repeating: 0, count: 12)
        header.withUnsafeMutableBytes {
            VirtioNetHeader(flags: .needsCsum, gsoType: .tcpv4, headerLength: 54, gsoSize: 1, csumStart: 34, csumOffset: 16).encode(into: $0)
        }
        let datagram = header + superFrame
        #expect(datagram.withUnsafeBytes { send(tapLike.peer, $0.baseAddress, $0.count, 0) } == datagram.count)
        try waitUntil(5, "the drop") { try lt.sync { relay.forward.statistics.drops(.malformed) } == 1 }
        try lt.sync { relay.stop() }
        #expect(try lt.stop() == nil)
        #expect(plain.seen.isEmpty)
    }
}
