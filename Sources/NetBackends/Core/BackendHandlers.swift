/// A backend's three handlers and its receive switch: the one place a handler is called
/// from, so that the seed's guarantee holds whatever descriptor, timer or queued work
/// led to the call. Once `disableReceive` returns on a thread other than the loop's, the
/// receive handler is not running and none starts until `enableReceive`; once
/// `removeAll` returns there, no handler is running and none starts again.
///
/// Guarded by the event loop's own lock and condition (the ones `EventSource` uses), so a
/// disabling thread waits exactly as for a source: a handler call takes the lock twice,
/// once per wake-up, never per frame. Called from inside a handler on the loop thread
/// (or while no loop runs) nothing waits.
final class BackendHandlers: @unchecked Sendable {
    typealias Handler = @Sendable () -> Void
    typealias LinkHandler = @Sendable (_ up: Bool) -> Void

    private let loop: NetEventLoop
    // Guarded by loop.lock.
    private var receive: Handler?
    private var writable: Handler?
    private var linkState: LinkHandler?
    private var receiveOn = false
    /// Handler calls under way (a link-state call may run inside a receive call).
    private var receiveDepth = 0
    private var depth = 0
    private var waiters = 0

    init(loop: NetEventLoop) { self.loop = loop }

    var receiveEnabled: Bool { loop.lock.withLock { receiveOn } }

    func setReceive(_ h: Handler?) { loop.lock.withLock { receive = h } }
    func setWritable(_ h: Handler?) { loop.lock.withLock { writable = h } }
    func setLinkState(_ h: LinkHandler?) { loop.lock.withLock { linkState = h } }

    /// Drops every handler (they often hold the backend or a relay: this ends that cycle)
    /// and waits until none is running.
    func removeAll() {
        loop.lock.lock()
        defer { loop.lock.unlock() }
        receive = nil
        writable = nil
        linkState = nil
        waitLocked { $0.depth > 0 }
    }

    func enableReceive() { loop.lock.withLock { receiveOn = true } }

    func disableReceive() {
        loop.lock.lock()
        defer { loop.lock.unlock() }
        receiveOn = false
        waitLocked { $0.receiveDepth > 0 }
    }

    /// Calls the receive handler when receive is enabled. Returns whether receive is
    /// still enabled afterwards (false when nothing was called).
    @inline(__always)
    func callReceive() -> Bool {
        let lock = loop.lock
        lock.lock()
        guard receiveOn, let h = receive else { lock.unlock(); return false }
        receiveDepth += 1
        depth += 1
        lock.unlock()
        h()
        lock.lock()
        receiveDepth -= 1
        depth -= 1
        if waiters > 0 { lock.broadcast() }
        let on = receiveOn
        lock.unlock()
        return on
    }

    func callWritable() {
        loop.lock.lock()
        guard let h = writable else { loop.lock.unlock(); return }
        depth += 1
        loop.lock.unlock()
        h()
        finishCall()
    }

    func callLinkState(_ up: Bool) {
        loop.lock.lock()
        guard let h = linkState else { loop.lock.unlock(); return }
        depth += 1
        loop.lock.unlock()
        h(up)
        finishCall()
    }

    private func finishCall() {
        loop.lock.lock()
        depth -= 1
        if waiters > 0 { loop.lock.broadcast() }
        loop.lock.unlock()
    }

    /// Waits (lock held) while `busy`, unless this thread is the loop's or no loop runs:
    /// then no handler can be running anywhere but further up this thread's own stack.
    private func waitLocked(_ busy: (BackendHandlers) -> Bool) {
        guard loop.mayWaitForHandlersLocked else { return }
        waiters += 1
        while busy(self) { loop.lock.wait() }
        waiters -= 1
    }
}
