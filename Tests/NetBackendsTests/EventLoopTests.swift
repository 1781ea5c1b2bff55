import CNetBackends
import Foundation
import NetBackends
import Testing

/// The event loop's threading contract (NetEventLoop.swift): timers, `execute`, `stop`,
/// no spinning on a hung-up descriptor whose interest is off, and the seed's
/// recv_disable guarantee under real traffic.
@Suite struct EventLoopTests {
    @Test func timersFireOnTheLoopThreadAndStopWhenCancelled() throws {
        let lt = try LoopThread()
        let fired = Locked((count: 0, offThread: 0))
        let loop = lt.loop
        let timer = try loop.addTimer(name: "test-timer", intervalMilliseconds: 10) {
            fired.withLock {
                $0.count += 1
                if !loop.inLoopThread { $0.offThread += 1 }
            }
        }
        try waitUntil(3, "five timer firings") { fired.current.count >= 5 }
        timer.cancel()
        let afterCancel = fired.current.count
        usleep(100_000)
        #expect(fired.current.count == afterCancel, "a cancelled timer fired again")
        #expect(fired.current.offThread == 0)
        #expect(try lt.stop() == nil)
    }

    @Test func oneShotTimerFiresOncePerArmAndNotWhenDisarmed() throws {
        let lt = try LoopThread()
        let fired = Locked(0)
        let timer = try lt.loop.makeOneShotTimer(name: "one-shot") { fired.withLock { $0 += 1 } }
        defer { timer.cancel() }
        usleep(50_000)
        #expect(fired.current == 0, "a timer that was never armed fired")
        try timer.arm(milliseconds: 10)
        try waitUntil(2, "the armed timer") { fired.current == 1 }
        usleep(100_000)
        #expect(fired.current == 1, "a one-shot timer fired \(fired.current) times for one arm")
        try timer.arm(milliseconds: 50)
        timer.disarm()
        usleep(150_000)
        #expect(fired.current == 1, "a disarmed timer fired")
        #expect(try lt.stop() == nil)
    }

    @Test func executeFromOtherThreadsRunsOnTheLoopThreadInOrder() throws {
        let lt = try LoopThread()
        let loop = lt.loop
        let perThread = 200
        let seen = Locked((order: [Int: [Int]](), offThread: 0))
        let group = DispatchGroup()
        for t in 0..<4 {
            group.enter()
            Thread {
                for i in 0..<perThread {
                    loop.execute {
                        seen.withLock {
                            $0.order[t, default: []].append(i)
                            if !loop.inLoopThread { $0.offThread += 1 }
                        }
                    }
                }
                group.leave()
            }.start()
        }
        #expect(group.wait(timeout: .now() + 5) == .success)
        try waitUntil(5, "every executed block") { seen.current.order.values.reduce(0) { $0 + $1.count } == 4 * perThread }
        #expect(seen.current.offThread == 0)
        for t in 0..<4 {
            #expect(seen.current.order[t] == Array(0..<perThread), "thread \(t)'s blocks ran out of order")
        }
        #expect(!loop.inLoopThread)   // the test thread is not the loop thread
        #expect(try lt.stop() == nil)
    }

    struct Boom: Error, Equatable { let code: Int }

    @Test func stopThrowingMakesRunThrowThatError() throws {
        let lt = try LoopThread()
        // From the loop thread itself, as a backend's failing handler does.
        lt.loop.execute { [loop = lt.loop] in loop.stop(throwing: Boom(code: 7)) }
        let error = try lt.join()
        #expect(error as? Boom == Boom(code: 7))
    }

    @Test func stopFromAnotherThreadMakesRunReturn() throws {
        let lt = try LoopThread()
        usleep(20_000)
        lt.loop.stop()
        #expect(try lt.join() == nil)
    }

    /// A loop that was stopped (with an error) runs again, without that stop or error:
    /// a VMM pauses its network and resumes it on the same loop and backends.
    @Test func aStoppedLoopRunsAgain() throws {
        let loop = try NetEventLoop()
        let first = try LoopThread(loop)
        first.loop.execute { [loop] in loop.stop(throwing: Boom(code: 1)) }
        #expect(try first.join() as? Boom == Boom(code: 1))
        let ran = Locked(false)
        let second = try LoopThread(loop)
        loop.execute { ran.withLock { $0 = true } }
        try waitUntil(2, "work on the loop run again") { ran.current }
        usleep(20_000)
        loop.stop()
        #expect(try second.join() == nil, "the first run's error was thrown again")
    }

    // MARK: a hung-up descriptor must not make the loop spin

    enum Hangup: String, CaseIterable, CustomTestStringConvertible {
        case pipeWriterClosed, socketPeerClosed
        var testDescription: String { rawValue }

        /// (descriptor to watch, descriptor whose close hangs it up)
        func makePair() throws -> (Int32, Int32) {
            var fds: [Int32] = [-1, -1]
            switch self {
            case .pipeWriterClosed:
                guard pipe(&fds) == 0 else { throw TestFailure("pipe: \(String(cString: strerror(errno)))") }
                return (fds[0], fds[1])
            case .socketPeerClosed:
                guard socketpair(AF_UNIX, cnb_SOCK_STREAM, 0, &fds) == 0 else {
                    throw TestFailure("socketpair: \(String(cString: strerror(errno)))")
                }
                return (fds[0], fds[1])
            }
        }
    }

    /// Loop rounds (before-wait hook calls) during `seconds` of idling.
    private func rounds(of lt: LoopThread, counter: Locked<Int>, over seconds: Double) -> Int {
        let start = counter.current
        usleep(UInt32(seconds * 1_000_000))
        return counter.current - start
    }

    @Test(arguments: Hangup.allCases)
    func hangupWhileDisabledDoesNotSpin(_ kind: Hangup) throws {
        let loop = try NetEventLoop()
        let counter = Locked(0)
        loop.addBeforeWaitHook { _ in counter.withLock { $0 += 1 } }
        let lt = try LoopThread(loop)
        let (fd, peer) = try kind.makePair()
        var peerOpen = true
        defer { if peerOpen { close(peer) } }
        let calls = Locked(0)
        let source = try loop.watch(fd: fd, name: "hup-\(kind)", ownsDescriptor: true) { _ in
            var byte: UInt8 = 0
            _ = read(fd, &byte, 1)
            calls.withLock { $0 += 1 }
        }
        defer { source.cancel() }
        source.enable(.read)
        var one: UInt8 = 1
        #expect(write(peer, &one, 1) == 1)
        try waitUntil(2, "the byte to be read") { calls.current == 1 }
        source.disable(.read)
        close(peer)
        peerOpen = false
        let n = rounds(of: lt, counter: counter, over: 0.3)
        #expect(n <= 5, "the loop went round \(n) times in 300 ms with a hung-up, disabled descriptor")
        #expect(calls.current == 1, "a disabled source's handler ran")
        #expect(try lt.stop() == nil)
    }

    @Test func handlerDisablingItselfOnEndOfFileDoesNotSpinOrBlock() throws {
        let loop = try NetEventLoop()
        let counter = Locked(0)
        loop.addBeforeWaitHook { _ in counter.withLock { $0 += 1 } }
        let lt = try LoopThread(loop)
        let (fd, peer) = try Hangup.socketPeerClosed.makePair()
        let sawEOF = Locked(0)
        let holder = Locked<EventSource?>(nil)
        let source = try loop.watch(fd: fd, name: "eof", ownsDescriptor: true) { _ in
            var buf = [UInt8](repeating: 0, count: 64)
            if read(fd, &buf, buf.count) == 0 {
                sawEOF.withLock { $0 += 1 }
                // From inside the handler: must not wait for itself.
                holder.current?.disable(.read)
            }
        }
        holder.withLock { $0 = source }
        defer { source.cancel() }
        source.enable(.read)
        close(peer)
        try waitUntil(2, "end of file seen") { sawEOF.current >= 1 }
        let n = rounds(of: lt, counter: counter, over: 0.3)
        #expect(n <= 5, "the loop went round \(n) times in 300 ms after the handler disabled itself")
        #expect(sawEOF.current == 1)
        #expect(source.isEnabled == [])
        // Still alive and serving other work.
        #expect(try lt.sync { 42 } == 42)
        #expect(try lt.stop() == nil)
    }

    // MARK: disable from a second thread while frames flow

    /// Handler-side bookkeeping: `disabled` is set by the test thread right after
    /// disableReceive() returns; a handler call starting while it is set, or still
    /// running once it is set, is a violation.
    struct FlowState {
        var disabled = true
        var calls = 0
        var lateStarts = 0
        var lateEnds = 0
        var frames = 0
    }

    @Test(.timeLimit(.minutes(1)))
    func disableFromAnotherThreadNeverSeesALateCallback() throws {
        try requireDebianPython()
        let ns = try TestNamespace("flow")
        try ns.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        let loop = try NetEventLoop()
        let tap = try BackendRegistry.shared.open("tap0,netns=\(ns.name)", on: loop)
        defer { tap.close() }
        try tap.setCapabilities([], vnetHeaderLength: 12)
        let state = Locked(FlowState())
        tap.setReceiveHandler { [unowned tap] in
            state.withLock {
                $0.calls += 1
                if $0.disabled { $0.lateStarts += 1 }
            }
            // A small batch leaves frames waiting, so the handler is called again and again.
            var n = 0
            while n < 4, case .frame = (try? tap.discardReceived()) ?? .empty { n += 1 }
            state.withLock {
                $0.frames += n
                if $0.disabled { $0.lateEnds += 1 }
            }
        }
        let lt = try LoopThread(loop)

        // The namespace streams UDP at a static neighbour reachable through the tap.
        try ns.address("tap0", "10.67.0.1/24")
        try sh("ip", "-n", ns.name, "neigh", "add", "10.67.0.2", "lladdr", "02:00:00:00:00:02", "dev", "tap0")
        let flood = try ns.spawn([debianPython, "-c", """
            import socket
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            while True:
                try: s.sendto(b"x" * 64, ("10.67.0.2", 9))
                except OSError: pass
            """])
        _ = flood

        let cycles = 300
        var cyclesWithCallbacks = 0
        for _ in 0..<cycles {
            let before = state.withLock { s -> Int in s.disabled = false; return s.calls }
            tap.enableReceive()
            let deadline = Date().addingTimeInterval(0.05)
            while state.current.calls == before && Date() < deadline { usleep(200) }
            if state.current.calls > before { cyclesWithCallbacks += 1 }
            usleep(300)   // let callbacks run while we disable
            tap.disableReceive()
            state.withLock { $0.disabled = true }
            usleep(300)   // room for a late callback to show up
        }
        usleep(50_000)
        let s = state.current
        #expect(s.lateStarts == 0, "\(s.lateStarts) receive callbacks started after disableReceive() returned")
        #expect(s.lateEnds == 0, "\(s.lateEnds) receive callbacks were still running after disableReceive() returned")
        #expect(s.calls > 0 && s.frames > 0, "no frames reached the handler (calls \(s.calls), frames \(s.frames))")
        #expect(cyclesWithCallbacks > cycles / 2, "only \(cyclesWithCallbacks) of \(cycles) enable cycles saw a callback")

        // Disable from inside the handler returns at once (no self-deadlock), and the
        // handler is not called again.
        let inside = Locked(0)
        tap.setReceiveHandler { [unowned tap] in
            inside.withLock { $0 += 1 }
            tap.disableReceive()
        }
        tap.enableReceive()
        try waitUntil(2, "the handler that disables itself") { inside.current >= 1 }
        #expect(try lt.sync { "alive" } == "alive", "the loop is stuck after disable from inside the handler")
        usleep(100_000)
        #expect(inside.current == 1)

        // close() from this thread while frames flow: same guarantee as disable.
        let closing = Locked((closed: false, calls: 0, late: 0))
        tap.setReceiveHandler { [unowned tap] in
            closing.withLock { $0.calls += 1; if $0.closed { $0.late += 1 } }
            _ = try? tap.discardReceived()
        }
        tap.enableReceive()
        try waitUntil(2, "callbacks before close") { closing.current.calls > 10 }
        tap.close()
        closing.withLock { $0.closed = true }
        usleep(100_000)
        #expect(closing.current.late == 0, "a receive callback ran after close() returned")
        #expect(try lt.stop() == nil)
    }
}
