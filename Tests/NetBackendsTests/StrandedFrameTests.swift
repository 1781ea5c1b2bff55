import Foundation
import NetBackends
import Testing

/// No stranded frames: a frontend that stops in the middle of a batch (it takes one
/// frame, peeks at the next as a virtio-net frontend checks that it has room, and
/// returns) is called again while frames wait, whether it stays enabled or disables
/// receive and enables it again later from another thread. Frames already pulled into
/// the backend's own buffers (a peeked tap frame, the seqpacket read-ahead ring, a
/// stream's buffered records) raise no epoll event of their own, so the backend itself
/// must ask for the call.
@Suite struct StrandedFrameTests {
    enum Stop: String, CaseIterable, CustomTestStringConvertible {
        /// Returns after one frame, receive left enabled.
        case staysEnabled
        /// Disables receive before returning; the test thread enables it again.
        case disablesThenEnabledLater
        var testDescription: String { rawValue }
    }

    static var cases: [(TrafficCase, Stop)] {
        TrafficCase.all.flatMap { c in Stop.allCases.map { (c, $0) } }
    }

    @Test(.timeLimit(.minutes(1)), arguments: cases)
    func everyWaitingFrameIsDelivered(_ variant: TrafficCase, _ stop: Stop) throws {
        let loop = try NetEventLoop()
        let rig = try variant.open(on: loop)
        defer { rig.close() }
        let backend = rig.backend
        try backend.setCapabilities([], vnetHeaderLength: 0)
        let got = Locked((frames: 0, stopped: false))
        let buffer = FrameBuffer()
        backend.setReceiveHandler { [unowned backend] in
            if case .frame = (try? backend.receive(into: buffer)) ?? .empty {
                got.withLock { $0.frames += 1 }
            }
            _ = try? backend.peekReceiveLength()
            if stop == .disablesThenEnabledLater {
                backend.disableReceive()
                got.withLock { $0.stopped = true }
            }
        }
        let lt = try LoopThread(loop)
        defer { _ = try? lt.stop() }
        backend.enableReceive()
        let count = 12
        try rig.burst(count, lt)
        let deadline = Date().addingTimeInterval(5)
        while got.current.frames < count && Date() < deadline {
            if got.withLock({ s -> Bool in let was = s.stopped; s.stopped = false; return was }) {
                usleep(2_000)   // the frontend makes room, later
                backend.enableReceive()
            }
            usleep(500)
        }
        let frames = got.current.frames
        #expect(frames >= count, "\(variant), \(stop): \(frames) of \(count) frames reached the frontend; the rest wait where no event announces them")
        backend.disableReceive()
        #expect(try lt.stop() == nil)
    }
}
