import CNetBackends
import Foundation
import NetBackends
import Testing

/// A seqpacket peer that sent its frames and closed: the send that finds it gone must
/// not throw away what it sent before.
@Suite struct SeqpacketDrainTests {
    @Test func framesSentBeforeThePeerClosedAreDelivered() throws {
        var pair: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, cnb_SOCK_SEQPACKET | cnb_SOCK_CLOEXEC, 0, &pair) == 0)
        let ours = pair[0], theirs = pair[1]
        _ = fcntl(ours, F_SETFL, fcntl(ours, F_GETFL) | O_NONBLOCK)
        let runner = try LoopThread()
        let spec = try BackendSpec(parsing: "seqpacket")
        let backend = try SeqpacketBackend(spec: spec, kind: "seqpacket", name: "test seqpacket", fd: ours, eventLoop: runner.loop)
        defer { backend.close() }
        // The peer writes its frames and leaves before netbe reads any of them.
        let count = 50
        for i in 0..<count {
            var frame = [UInt8](repeating: 0xff, count: 6) + [2, 0, 0, 0, 0, 1, 0x88, 0xb5] + [UInt8(i)] + [UInt8](repeating: 0, count: 45)
            #expect(send(theirs, &frame, frame.count, 0) == frame.count)
        }
        _ = close(theirs)
        // netbe writes to it: the write fails (EPIPE).
        let sendResult = try runner.sync { () -> String in
            do throws(NetBackendError) { return "\(try backend.send([UInt8](repeating: 0xff, count: 64)))" } catch { return "threw \(error)" }
        }
        // Batched: the frame may be taken (then counted as a no_peer drop when the batch
        // fails) or refused; either way the failure is not thrown.
        #expect(!sendResult.hasPrefix("threw"), "\(sendResult)")
        #expect(try runner.sync { backend.statistics.drops(.noPeer) } == 1)
        let delivered = Locked<[UInt8]>([])
        let ended = Locked<String?>(nil)
        let frame = FrameBuffer()
        backend.setReceiveHandler {
            while true {
                do throws(NetBackendError) {
                    switch try backend.receive(into: frame) {
                    case .empty: return
                    case .frame: delivered.withLock { $0.append(frame.bytes[14]) }
                    default: continue
                    }
                } catch {
                    ended.withLock { $0 = "\(error)" }
                    return
                }
            }
        }
        try runner.sync { backend.enableReceive() }
        try waitUntil(5, "the peer's end of file") { ended.current != nil }
        #expect(delivered.current == (0..<count).map { UInt8($0) }, "delivered \(delivered.current.count) of \(count)")
    }
}
