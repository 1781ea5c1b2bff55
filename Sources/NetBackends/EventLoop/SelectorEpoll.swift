#if os(Linux)
import CNetBackends
import Glibc

/// epoll, eventfd and timerfd: the Linux half of `NetEventLoop`. Each registration's id
/// rides in epoll's user data, so an event for a closed-and-reused descriptor is
/// recognised as stale by the loop's id lookup.
final class Selector: @unchecked Sendable {
    struct Event {
        var id: UInt64
        var ready: NetEventLoop.Interest
    }

    private let epfd: Int32
    private var wakeFD: Int32 = -1
    private var raw: UnsafeMutablePointer<epoll_event>
    private var rawCapacity = 0

    init() throws(SystemCallError) {
        epfd = try Syscall.check("epoll_create1", device: "event loop") { epoll_create1(Int32(EPOLL_CLOEXEC)) }
        raw = UnsafeMutablePointer<epoll_event>.allocate(capacity: 256)
        rawCapacity = 256
    }

    func close() {
        raw.deallocate()
        _ = Glibc.close(epfd)
    }

    private static func mask(_ i: NetEventLoop.Interest) -> UInt32 {
        var m: UInt32 = 0
        if i.contains(.read) { m |= EPOLLIN.rawValue | EPOLLRDHUP.rawValue }
        if i.contains(.write) { m |= EPOLLOUT.rawValue }
        return m
    }

    /// Adds, changes or removes `fd`'s registration. Removing one epoll no longer has
    /// (the descriptor was closed, which unregisters it) is done; an add that finds it
    /// registered, or a change that finds it not, does the other. Anything else throws.
    func update(fd: Int32, id: UInt64, registered: Bool, new: NetEventLoop.Interest) throws(SystemCallError) {
        if !registered && new.isEmpty { return }
        var ev = epoll_event(events: Self.mask(new), data: epoll_data_t(u64: id))
        var op: Int32
        if new.isEmpty { op = EPOLL_CTL_DEL } else if !registered { op = EPOLL_CTL_ADD } else { op = EPOLL_CTL_MOD }
        var retried = false
        while epoll_ctl(epfd, op, fd, &ev) < 0 {
            let e = errno
            switch (op, e) {
            case (EPOLL_CTL_DEL, ENOENT), (EPOLL_CTL_DEL, EBADF):
                return
            case (EPOLL_CTL_ADD, EEXIST) where !retried:
                op = EPOLL_CTL_MOD
            case (EPOLL_CTL_MOD, ENOENT) where !retried:
                op = EPOLL_CTL_ADD
            default:
                let name = op == EPOLL_CTL_ADD ? "ADD" : op == EPOLL_CTL_MOD ? "MOD" : "DEL"
                throw SystemCallError(call: "epoll_ctl(\(name))", device: "fd \(fd)", errno: e,
                                      hint: e == EPERM ? "epoll cannot watch this kind of file" : nil)
            }
            retried = true
        }
    }

    /// Waits; HUP/ERR are reported as both read and write so whichever interest is
    /// enabled sees the condition (its own I/O call then returns the error).
    func wait(_ out: UnsafeMutablePointer<Event>, capacity: Int, timeoutMilliseconds: Int32) throws(SystemCallError) -> Int {
        let cap = min(capacity, rawCapacity)
        do {
            let n = try Syscall.check("epoll_wait", device: "event loop") { epoll_wait(epfd, raw, Int32(cap), timeoutMilliseconds) }
            for i in 0..<Int(n) {
                let e = raw[i].events
                var ready: NetEventLoop.Interest = []
                if e & (EPOLLIN.rawValue | EPOLLRDHUP.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 { ready.insert(.read) }
                if e & (EPOLLOUT.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 { ready.insert(.write) }
                out[i] = Event(id: raw[i].data.u64, ready: ready)
            }
            return Int(n)
        }
    }

    func makeEventFD() throws(SystemCallError) -> Int32 {
        let fd = try Syscall.check("eventfd", device: "event loop") { eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC)) }
        wakeFD = fd
        return fd
    }

    func signalEventFD() {
        var one: UInt64 = 1
        _ = Glibc.write(wakeFD, &one, 8)
    }

    /// Reads an eventfd or timerfd counter so it stops being readable.
    func drainEventFD(_ fd: Int32) {
        var v: UInt64 = 0
        _ = Glibc.read(fd, &v, 8)
    }

    func makeTimerFD(intervalMilliseconds: Int, name: String) throws(SystemCallError) -> Int32 {
        let fd = try makeTimerFD(name: name)
        do {
            try Self.setTimer(fd, milliseconds: intervalMilliseconds, repeating: true, name: name)
        } catch {
            _ = Glibc.close(fd)
            throw error
        }
        return fd
    }

    /// A disarmed timerfd.
    func makeTimerFD(name: String) throws(SystemCallError) -> Int32 {
        let fd = try Syscall.check("timerfd_create", device: name) { timerfd_create(CLOCK_MONOTONIC, Int32(TFD_NONBLOCK | TFD_CLOEXEC)) }
        return fd
    }

    /// Arms `fd` to expire in `milliseconds` (0 disarms), and every as long after when `repeating`.
    static func setTimer(_ fd: Int32, milliseconds: Int, repeating: Bool, name: String) throws(SystemCallError) {
        let ts = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
        var spec = itimerspec(it_interval: repeating ? ts : timespec(), it_value: ts)
        try Syscall.check("timerfd_settime", device: name) { timerfd_settime(fd, 0, &spec, nil) }
    }
}
#endif
