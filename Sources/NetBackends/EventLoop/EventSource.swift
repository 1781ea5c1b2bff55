/// One registration with an `NetEventLoop`: a descriptor, its handler and the interest
/// currently enabled. See `NetEventLoop` for the threading contract.
public final class EventSource: @unchecked Sendable {
    public let fd: Int32
    public let name: String
    let id: UInt64
    let handler: NetEventLoop.Handler
    /// Weak: a source may outlive its loop (its owner closes it later); it then does nothing.
    private weak var loop: NetEventLoop?
    private let ownsDescriptor: Bool
    // Guarded by loop.lock.
    var enabled: NetEventLoop.Interest = []
    /// The descriptor is in epoll's set (an add that failed leaves it out).
    var registered = false
    var running = false
    var waiters = 0
    var cancelled = false

    init(loop: NetEventLoop, id: UInt64, fd: Int32, name: String, ownsDescriptor: Bool, handler: @escaping NetEventLoop.Handler) {
        self.loop = loop
        self.id = id
        self.fd = fd
        self.name = name
        self.ownsDescriptor = ownsDescriptor
        self.handler = handler
    }

    /// Adds `interest`; the handler is called while the descriptor is ready for it.
    public func enable(_ interest: NetEventLoop.Interest) {
        guard let loop else { return }
        loop.lock.lock()
        defer { loop.lock.unlock() }
        let old = enabled
        enabled.formUnion(interest)
        if enabled != old { loop.updateLocked(self, from: old) }
    }

    /// Removes `interest`. From another thread: returns once the handler is not
    /// running, and no call for `interest` starts after that.
    public func disable(_ interest: NetEventLoop.Interest) {
        guard let loop else { return }
        loop.lock.lock()
        defer { loop.lock.unlock() }
        let old = enabled
        enabled.subtract(interest)
        if enabled != old { loop.updateLocked(self, from: old) }
        loop.waitNotRunningLocked(self)
    }

    public var isEnabled: NetEventLoop.Interest {
        guard let loop else { return [] }
        return loop.lock.withLock { enabled }
    }

    /// Unregisters for good (the seed's mevent_delete), closing the descriptor if the
    /// loop owns it. Same waiting rule as `disable`.
    public func cancel() {
        guard let loop else {
            // The loop is gone; its deinit closed what it owned and marked us cancelled.
            return
        }
        loop.lock.lock()
        defer { loop.lock.unlock() }
        guard !cancelled else { return }
        let old = enabled
        enabled = []
        if !old.isEmpty { loop.updateLocked(self, from: old) }
        cancelled = true
        loop.removeLocked(self)
        loop.waitNotRunningLocked(self)
        closeDescriptorIfOwned()
    }

    func closeDescriptorIfOwned() {
        if ownsDescriptor { _ = systemClose(fd) }
    }
}

#if canImport(Glibc)
import Glibc
@inline(__always) func systemClose(_ fd: Int32) -> Int32 { Glibc.close(fd) }
#elseif canImport(Darwin)
import Darwin
@inline(__always) func systemClose(_ fd: Int32) -> Int32 { Darwin.close(fd) }
#endif
