#if os(Linux)
import Glibc

/// A timer that fires once per `arm`, on the loop thread (a timerfd). It is made ahead of
/// need and kept disarmed, because making one costs a descriptor, and running out of
/// descriptors is one of the things it is there to wait out.
public final class OneShotTimer: @unchecked Sendable {
    public let name: String
    private let fd: Int32
    private let source: EventSource

    init(loop: NetEventLoop, name: String, handler: @escaping @Sendable () -> Void) throws(SystemCallError) {
        let fd = try loop.selector.makeTimerFD(name: name)
        let selector = loop.selector
        do {
            source = try loop.watch(fd: fd, name: name, ownsDescriptor: true) { _ in
                selector.drainEventFD(fd)
                handler()
            }
        } catch {
            _ = Glibc.close(fd)
            throw error
        }
        self.fd = fd
        self.name = name
    }

    /// Fires once, `milliseconds` (at least 1) from now; re-arming moves the deadline.
    public func arm(milliseconds: Int) throws(SystemCallError) {
        try Selector.setTimer(fd, milliseconds: max(1, milliseconds), repeating: false, name: name)
        source.enable(.read)
    }

    /// Keeps it from firing until armed again.
    public func disarm() {
        source.disable(.read)
        try? Selector.setTimer(fd, milliseconds: 0, repeating: false, name: name)
    }

    /// Closes it for good (same waiting rule as `EventSource.cancel`).
    public func cancel() { source.cancel() }
}

extension NetEventLoop {
    /// A disarmed one-shot timer whose `handler` runs on the loop thread once per `arm`.
    public func makeOneShotTimer(name: String, handler: @escaping @Sendable () -> Void) throws(SystemCallError) -> OneShotTimer {
        try OneShotTimer(loop: self, name: name, handler: handler)
    }
}
#endif
