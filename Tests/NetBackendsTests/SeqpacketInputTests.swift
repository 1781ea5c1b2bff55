import CNetBackends
import Foundation
import NetBackends
import Testing

/// A seqpacket peer's bytes are validated before they become a frame: a message shorter
/// than an Ethernet header is dropped as `truncated`, whichever header length the
/// frontend chose, and the next good frame still arrives.
@Suite struct SeqpacketInputTests {
    @Test func messageShorterThanAnEthernetHeaderIsNeverAFrame() throws {
        var fds: [Int32] = [-1, -1]
        try #require(socketpair(AF_UNIX, cnb_SOCK_SEQPACKET, 0, &fds) == 0)
        defer { close(fds[1]) }
        _ = fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK)
        let lt = try LoopThread()
        let backend = try SeqpacketBackend(spec: try BackendSpec(parsing: "seqpacket"), kind: "seqpacket",
                                           name: "seqpacket test", fd: fds[0], eventLoop: lt.loop)
        defer { backend.close() }
        let results = Locked<[ReceiveResult]>([])
        let payloads = Locked<[[UInt8]]>([])
        let buffer = FrameBuffer()
        backend.setReceiveHandler {
            while let r = try? backend.receive(into: buffer), r != .empty {
                results.withLock { $0.append(r) }
                if case .frame = r { payloads.withLock { $0.append(buffer.array) } }
            }
        }
        backend.enableReceive()
        let short: [UInt8] = [1, 2, 3, 4, 5]
        let frame = TestFrames.arpRequest(from: [10, 9, 0, 2], for: [10, 9, 0, 1])
        for m in [short, frame] {
            #expect(m.withUnsafeBytes { send(fds[1], $0.baseAddress, $0.count, 0) } == m.count)
        }
        try waitUntil(5, "two results") { results.current.count >= 2 }
        #expect(results.current == [.dropped(length: 5, reason: .truncated), .frame(length: frame.count)])
        #expect(payloads.current == [frame])
        #expect(try lt.sync { backend.statistics.drops(.truncated) } == 1)
    }
}
