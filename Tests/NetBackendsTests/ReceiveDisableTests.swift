import Foundation
import NetBackends
import Testing

/// The seed's receive-disable guarantee for every kind the registry can run here (and the
/// seqpacket transport): while frames keep arriving, `disableReceive()` called from the
/// test thread returns only once no receive handler is running, and none starts until
/// `enableReceive()`. A slirp helper is killed twice on the way, so that the descriptor
/// the backend reads is replaced while the test enables and disables.
@Suite struct ReceiveDisableTests {
    /// Handler bookkeeping: `disabled` is set right after disableReceive() returned; a
    /// handler starting while it is set, or still running once it is set, is a violation.
    struct Flow {
        var disabled = true
        var calls = 0
        var lateStarts = 0
        var lateEnds = 0
        var frames = 0
    }

    @Test(.timeLimit(.minutes(2)), arguments: TrafficCase.all)
    func noHandlerRunsAfterDisableReturns(_ variant: TrafficCase) throws {
        let loop = try NetEventLoop()
        let rig = try variant.open(on: loop)
        defer { rig.close() }
        let backend = rig.backend
        try backend.setCapabilities([], vnetHeaderLength: 0)
        let state = Locked(Flow())
        let buffer = FrameBuffer()
        backend.setReceiveHandler { [unowned backend] in
            state.withLock {
                $0.calls += 1
                if $0.disabled { $0.lateStarts += 1 }
            }
            // A small batch leaves frames waiting (in the kernel or in the backend's own
            // buffers), so that the backend has to call again.
            var n = 0
            while n < 4, case .frame = (try? backend.receive(into: buffer)) ?? .empty { n += 1 }
            usleep(20)   // a handler that takes a moment, as a real frontend's does
            state.withLock {
                $0.frames += n
                if $0.disabled { $0.lateEnds += 1 }
            }
        }
        let lt = try LoopThread(loop)
        defer { _ = try? lt.stop() }
        try rig.startFlood(lt)

        let cycles = 300
        var cyclesWithCallbacks = 0
        for cycle in 0..<cycles {
            if cycle == 80 || cycle == 180 { try rig.disturb(lt) }
            let before = state.withLock { s -> Int in s.disabled = false; return s.calls }
            backend.enableReceive()
            let deadline = Date().addingTimeInterval(0.05)
            while state.current.calls == before && Date() < deadline { usleep(200) }
            if state.current.calls > before { cyclesWithCallbacks += 1 }
            usleep(300)   // let callbacks run while we disable
            backend.disableReceive()
            state.withLock { $0.disabled = true }
            usleep(300)   // room for a late callback to show up
        }
        usleep(50_000)
        rig.stopFlood()
        let s = state.current
        #expect(s.lateStarts == 0, "\(variant): \(s.lateStarts) receive callbacks started after disableReceive() returned")
        #expect(s.lateEnds == 0, "\(variant): \(s.lateEnds) receive callbacks were still running after disableReceive() returned")
        #expect(s.calls > 0 && s.frames > 0, "\(variant): no frames reached the handler (calls \(s.calls), frames \(s.frames)) \(rig.diagnostics)")
        #expect(cyclesWithCallbacks > cycles / 4, "\(variant): only \(cyclesWithCallbacks) of \(cycles) enable cycles saw a callback")
        #expect(try lt.stop() == nil)
    }
}
