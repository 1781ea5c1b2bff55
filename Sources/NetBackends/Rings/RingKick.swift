import CNetBackends
#if canImport(Glibc)
import Glibc
#endif

/// An eventfd that tells the other side of a shared ring "I published": frames to read,
/// or slots handed back. The waiting side reads it (resetting it), then looks at the ring
/// again before it waits, so a kick sent between its last look and its wait is never lost
/// (the counter stays readable).
public struct RingKick: Sendable {
    public let fd: Int32

    public init(fd: Int32) { self.fd = fd }

    /// A new non-blocking eventfd (close-on-exec).
    public static func make() throws(SystemCallError) -> RingKick {
        let fd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard fd >= 0 else { throw SystemCallError(call: "eventfd", device: "ring kick", errno: errno) }
        return RingKick(fd: fd)
    }

    /// Wakes the other side (adds 1 to the counter).
    public func signal() throws(SystemCallError) {
        var one: UInt64 = 1
        while Glibc.write(fd, &one, 8) < 0 {
            if errno == EINTR { continue }
            if errno == EAGAIN { return }  // the counter is saturated: the peer is awake anyway
            throw SystemCallError(call: "write eventfd", device: "ring kick", errno: errno)
        }
    }

    /// Waits up to `milliseconds` for a kick and consumes it; false on timeout.
    public func wait(milliseconds: Int32) throws(SystemCallError) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while true {
            let n = poll(&p, 1, milliseconds)
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemCallError(call: "poll eventfd", device: "ring kick", errno: errno)
            }
            if n == 0 { return false }
            var value: UInt64 = 0
            _ = Glibc.read(fd, &value, 8)
            return true
        }
    }

    /// Resets the counter without waiting (one read); true if a kick was pending.
    @discardableResult
    public func consume() -> Bool {
        var value: UInt64 = 0
        return Glibc.read(fd, &value, 8) == 8
    }

    public func close() { _ = Glibc.close(fd) }
}
