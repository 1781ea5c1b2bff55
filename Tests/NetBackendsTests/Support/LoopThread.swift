import Foundation
import NetBackends

/// An `NetEventLoop` running on a thread of its own, as a VMM's I/O thread runs it.
/// `join` waits for `run()` to return and hands back what it threw; going away stops it.
final class LoopThread: @unchecked Sendable {
    let loop: NetEventLoop
    private let done = DispatchSemaphore(value: 0)
    private let outcome = Locked<(any Error)?>(nil)
    private var joined = false

    /// Starts `loop.run()` (a new loop when nil) on a new thread.
    init(_ loop: NetEventLoop? = nil) throws {
        let l = try loop ?? NetEventLoop()
        self.loop = l
        let outcome = self.outcome, done = self.done
        let thread = Thread {
            do { try l.run() } catch { outcome.withLock { $0 = error } }
            done.signal()
        }
        thread.name = "test-event-loop"
        thread.start()
    }

    deinit {
        if !joined {
            loop.stop()
            _ = done.wait(timeout: .now() + 5)
        }
    }

    /// Waits until `run()` returned: nil when it returned, its error when it threw.
    func join(seconds: Double = 5) throws -> (any Error)? {
        if !joined {
            if done.wait(timeout: .now() + seconds) == .timedOut {
                throw TestFailure("the event loop's run() did not return within \(seconds) s")
            }
            joined = true
        }
        return outcome.current
    }

    /// Stops the loop and waits for its thread; rethrows nothing, returns what run() threw.
    @discardableResult
    func stop() throws -> (any Error)? {
        loop.stop()
        return try join()
    }

    /// Runs `work` on the loop thread and waits for it (at most `seconds`).
    func sync<T: Sendable>(seconds: Double = 5, _ work: @escaping @Sendable () -> T) throws -> T {
        let result = Locked<T?>(nil)
        let finished = DispatchSemaphore(value: 0)
        loop.execute {
            result.withLock { $0 = work() }
            finished.signal()
        }
        if finished.wait(timeout: .now() + seconds) == .timedOut {
            throw TestFailure("work sent to the event loop did not run within \(seconds) s")
        }
        return result.current!
    }
}
