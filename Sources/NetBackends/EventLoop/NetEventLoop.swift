import Logging
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The seed's `mevent`: one thread waits on descriptors and timers and runs callbacks.
///
/// Threading contract:
/// - `run()` is called once, on a thread the caller owns; every handler, timer and
///   before-wait hook runs on that thread, one at a time.
/// - `watch`, `addTimer`, `execute`, `stop` and `EventSource.enable/disable/cancel`
///   may be called from any thread.
/// - `EventSource.disable` called from another thread returns only once that source's
///   handler is not running, and no handler call for the disabled interest starts after
///   it returns (the seed's recv_disable guarantee). Called from inside a handler (on the
///   loop thread) it does not wait.
/// - Level-triggered: a handler that leaves data unread is called again next round, so a
///   handler may stop after a batch to let others run.
/// - A fully disabled descriptor is removed from epoll, because epoll reports HUP and ERR
///   even with an empty interest mask: a vanished tap must not make the loop spin.
/// - A descriptor epoll refuses to watch (epoll_ctl fails: not pollable, out of watches)
///   is logged and ends `run()` with that error: a source is never left deaf in silence.
public final class NetEventLoop: @unchecked Sendable {
    public struct Interest: OptionSet, Sendable, Hashable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        public static let read = Interest(rawValue: 1)
        public static let write = Interest(rawValue: 2)
    }

    public typealias Handler = @Sendable (_ ready: Interest) -> Void

    /// Where this loop's backends log; a library user passes their own (swift-log).
    public let logger: Logger
    let lock = ConditionLock()
    let selector: Selector
    private let log = Logger(label: "netbe.eventloop")
    private var sources: [UInt64: EventSource] = [:]
    private var nextID: UInt64 = 1
    private var hooks: [@Sendable (_ timeoutMilliseconds: inout Int32) -> Void] = []
    private var pending: [LoopWork] = []
    /// The batch being run (loop thread only). Swapped with `pending` rather than copied, so
    /// that both keep their storage and a steady stream of `execute` allocates nothing (a
    /// backend's resume for frames in its own buffers goes through it per wake-up).
    private var running: [LoopWork] = []
    private var stopped = false
    private var failure: (any Error)?
    private var loopThread: pthread_t?
    private var wakeSource: EventSource?

    /// `logger` is handed to every backend opened on this loop (each adds its kind and
    /// name as metadata).
    public init(logger: Logger = Logger(label: "netbe")) throws(SystemCallError) {
        self.logger = logger
        // Room for a wake-up's queued work from the start: growing later (more backends
        // with buffered frames at once than ever before, a switch's ports) allocates.
        pending.reserveCapacity(64)
        running.reserveCapacity(64)
        selector = try Selector()
        let wake = try selector.makeEventFD()
        wakeSource = try watch(fd: wake, name: "eventloop-wakeup", ownsDescriptor: true) { [weak self] _ in
            guard let self else { return }
            self.selector.drainEventFD(wake)
            self.runPending()
        }
        wakeSource?.enable(.read)
    }

    deinit {
        for s in sources.values {
            s.cancelled = true   // a later cancel() on it must not close the descriptor again
            s.closeDescriptorIfOwned()
        }
        selector.close()
    }

    /// True when called from the thread inside `run()`.
    public var inLoopThread: Bool {
        lock.withLock { inLoopThreadLocked }
    }

    /// Registers `fd`, initially with no interest (the seed's mevent_add_disabled).
    /// With `ownsDescriptor` the loop closes it on `cancel`.
    public func watch(fd: Int32, name: String, ownsDescriptor: Bool = false, handler: @escaping Handler) throws(SystemCallError) -> EventSource {
        lock.lock()
        defer { lock.unlock() }
        let id = nextID
        nextID += 1
        let source = EventSource(loop: self, id: id, fd: fd, name: name, ownsDescriptor: ownsDescriptor, handler: handler)
        sources[id] = source
        return source
    }

    /// A repeating timer (timerfd), enabled at once.
    public func addTimer(name: String, intervalMilliseconds: Int, handler: @escaping @Sendable () -> Void) throws(SystemCallError) -> EventSource {
        let tfd = try selector.makeTimerFD(intervalMilliseconds: intervalMilliseconds, name: name)
        let sel = selector
        let source = try watch(fd: tfd, name: name, ownsDescriptor: true) { _ in
            sel.drainEventFD(tfd)
            handler()
        }
        source.enable(.read)
        return source
    }

    /// A hook run on the loop thread before every wait; it may lower the wait's
    /// timeout (milliseconds, -1 = none). libslirp's poll-fill runs here.
    public func addBeforeWaitHook(_ hook: @escaping @Sendable (_ timeoutMilliseconds: inout Int32) -> Void) {
        lock.withLock { hooks.append(hook) }
    }

    /// Runs `work` on the loop thread soon; callable from any thread.
    public func execute(_ work: @escaping @Sendable () -> Void) {
        execute(LoopWork(work))
    }

    /// `execute` for work made once and queued often (a backend's resume): a closure put
    /// in an array is re-wrapped, which allocates each time; a `LoopWork` is not.
    func execute(_ work: LoopWork) {
        lock.withLock { pending.append(work) }
        selector.signalEventFD()
    }

    /// Makes `run()` return after the current round. With an error, `run()` throws it.
    public func stop(throwing error: (any Error)? = nil) {
        lock.withLock {
            stopped = true
            if failure == nil { failure = error }
        }
        selector.signalEventFD()
    }

    /// Waits and dispatches until `stop`. Throws the error given to `stop(throwing:)`.
    /// A stop that came before `run()` ends it at once; after it returned, it may run again.
    public func run() throws {
        lock.withLock { loopThread = pthread_self() }
        defer { lock.withLock { loopThread = nil } }
        let capacity = 256
        let events = UnsafeMutablePointer<Selector.Event>.allocate(capacity: capacity)
        defer { events.deallocate() }
        while true {
            lock.lock()
            if stopped {
                // The stop is used up: a later run() serves again (a paused VMM resumes).
                let f = failure
                stopped = false
                failure = nil
                lock.unlock()
                if let f { throw f }
                return
            }
            let hooksNow = hooks
            lock.unlock()
            var timeout: Int32 = -1
            for h in hooksNow { h(&timeout) }
            let n = try selector.wait(events, capacity: capacity, timeoutMilliseconds: timeout)
            for i in 0..<n {
                dispatch(id: events[i].id, ready: events[i].ready)
            }
        }
    }

    private func runPending() {
        lock.withLock { swap(&pending, &running) }
        // By index, not `for in`: an iterator's copy of the array may outlive the loop and
        // make `removeAll` allocate a new buffer.
        var i = 0
        while i < running.count {
            running[i].run()
            i += 1
        }
        running.removeAll(keepingCapacity: true)
    }

    @inline(__always)
    private func dispatch(id: UInt64, ready: Interest) {
        lock.lock()
        // A source cancelled or disabled after epoll reported it is skipped: the report is stale.
        guard let source = sources[id] else { lock.unlock(); return }
        let fire = ready.intersection(source.enabled)
        if fire.isEmpty { lock.unlock(); return }
        source.running = true
        lock.unlock()
        source.handler(fire)
        lock.lock()
        source.running = false
        if source.waiters > 0 { lock.broadcast() }
        lock.unlock()
    }

    // MARK: called by EventSource with `lock` held

    func updateLocked(_ source: EventSource, from old: Interest) {
        guard !source.cancelled else { return }
        do {
            try selector.update(fd: source.fd, id: source.id, registered: source.registered, new: source.enabled)
            source.registered = !source.enabled.isEmpty
        } catch {
            // The source cannot be served (EPERM: not pollable; ENOMEM, ENOSPC: out of
            // watches). Its interest stays as asked, and run() ends with the error.
            log.error("\(source.name): \(error)")
            stopped = true
            if failure == nil { failure = error }
            selector.signalEventFD()
        }
    }

    func waitNotRunningLocked(_ source: EventSource) {
        if inLoopThreadLocked { return }
        source.waiters += 1
        while source.running { lock.wait() }
        source.waiters -= 1
    }

    /// Whether a thread that disables a handler must wait for it: not on the loop thread
    /// (the handler is up its own stack) and not while no loop runs (nothing can run).
    var mayWaitForHandlersLocked: Bool {
        loopThread != nil && !inLoopThreadLocked
    }

    private var inLoopThreadLocked: Bool {
        guard let t = loopThread else { return false }
        return pthread_equal(t, pthread_self()) != 0
    }

    func removeLocked(_ source: EventSource) {
        sources[source.id] = nil
    }
}

/// A closure queued on the loop as an object (see `NetEventLoop.execute(_:)`).
final class LoopWork: Sendable {
    let run: @Sendable () -> Void
    init(_ run: @escaping @Sendable () -> Void) { self.run = run }
}
