import CNetBackends
import CSlirp
#if canImport(Glibc)
import Glibc
#endif

/// The descriptors libslirp wants watched this round, and how the event loop learns
/// about them.
///
/// Design: libslirp hands out a new list on every `slirp_pollfds_fill` (sockets come
/// and go, interest flips between read and write). Creating an `EventSource` per socket
/// per round would allocate on every iteration, so the list lives in an inner epoll
/// instance, synced by difference after each fill (only changed descriptors cost an
/// `epoll_ctl`). The event loop watches that one epoll descriptor: it becomes readable
/// when any socket libslirp cares about is ready, which ends the loop's wait. The exact
/// readiness per entry then comes from one `poll(2)` with zero timeout over the filled
/// array, whose results `slirp_pollfds_poll` reads by index. Nothing spins: the epoll
/// descriptor is ready only while a watched socket is, and libslirp stops asking for a
/// socket it cannot serve.
final class SlirpPollSet {
    let epollFD: Int32
    private(set) var fds: UnsafeMutablePointer<pollfd>
    private(set) var count = 0
    private var capacity = 64
    /// Per descriptor number: the epoll mask registered, or 0 when not registered.
    private var registered: [UInt32] = []
    /// Per descriptor number: the fill round that last listed it.
    private var seenRound: [UInt32] = []
    private var round: UInt32 = 0
    /// Descriptors currently registered, to find the ones libslirp stopped listing.
    private var active: [Int32] = []

    init() throws(SystemCallError) {
        epollFD = try Syscall.check("epoll_create1", device: "slirp sockets") { epoll_create1(Int32(EPOLL_CLOEXEC)) }
        fds = .allocate(capacity: capacity)
        registered.reserveCapacity(1024)
        seenRound.reserveCapacity(1024)
        active.reserveCapacity(256)
    }

    deinit {
        fds.deallocate()
        _ = Glibc.close(epollFD)
    }

    func beginFill() {
        count = 0
        round &+= 1
        if round == 0 { round = 1; for i in seenRound.indices { seenRound[i] = 0 } }
    }

    /// libslirp's add_poll: records one descriptor, returns its index.
    @inline(__always)
    func add(fd: Int32, slirpEvents: Int32) -> Int32 {
        if count == capacity {
            let bigger = UnsafeMutablePointer<pollfd>.allocate(capacity: capacity * 2)
            bigger.update(from: fds, count: count)
            fds.deallocate()
            fds = bigger
            capacity *= 2
        }
        var events: Int16 = 0
        if slirpEvents & Int32(SLIRP_POLL_IN) != 0 { events |= Int16(POLLIN) }
        if slirpEvents & Int32(SLIRP_POLL_OUT) != 0 { events |= Int16(POLLOUT) }
        if slirpEvents & Int32(SLIRP_POLL_PRI) != 0 { events |= Int16(POLLPRI) }
        fds[count] = pollfd(fd: fd, events: events, revents: 0)
        count += 1
        return Int32(count - 1)
    }

    /// Brings the inner epoll in line with what was just filled.
    func endFill() {
        for i in 0..<count {
            let fd = fds[i].fd
            guard fd >= 0 else { continue }
            let n = Int(fd)
            if n >= registered.count {
                registered.append(contentsOf: repeatElement(0, count: n + 1 - registered.count))
                seenRound.append(contentsOf: repeatElement(0, count: n + 1 - seenRound.count))
            }
            var mask = EPOLLRDHUP.rawValue
            let ev = Int32(fds[i].events)
            if ev & Int32(POLLIN) != 0 { mask |= EPOLLIN.rawValue }
            if ev & Int32(POLLOUT) != 0 { mask |= EPOLLOUT.rawValue }
            if ev & Int32(POLLPRI) != 0 { mask |= EPOLLPRI.rawValue }
            // The same descriptor may be listed twice (rare): merge the masks.
            if seenRound[n] == round { mask |= registered[n] }
            seenRound[n] = round
            if registered[n] == mask { continue }
            var e = epoll_event(events: mask, data: epoll_data_t(fd: fd))
            if registered[n] == 0 {
                if epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &e) < 0 && errno == EEXIST {
                    _ = epoll_ctl(epollFD, EPOLL_CTL_MOD, fd, &e)
                }
                active.append(fd)
            } else if epoll_ctl(epollFD, EPOLL_CTL_MOD, fd, &e) < 0 && errno == ENOENT {
                // Closed and reused since the last round: epoll dropped the old one.
                _ = epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &e)
            }
            registered[n] = mask
        }
        // Descriptors not listed this round leave the epoll set.
        var i = 0
        while i < active.count {
            let fd = active[i]
            if seenRound[Int(fd)] != round {
                forget(fd: fd, at: i)
            } else {
                i += 1
            }
        }
    }

    /// libslirp closed or stopped listing `fd`.
    func unregister(fd: Int32) {
        guard let i = active.firstIndex(of: fd) else { return }
        forget(fd: fd, at: i)
    }

    private func forget(fd: Int32, at index: Int) {
        var e = epoll_event()
        _ = epoll_ctl(epollFD, EPOLL_CTL_DEL, fd, &e)
        registered[Int(fd)] = 0
        active.swapAt(index, active.count - 1)
        active.removeLast()
    }

    /// Readiness of every filled entry right now; false when poll(2) failed.
    func pollNow() -> Bool {
        guard count > 0 else { return true }
        while true {
            let r = poll(fds, nfds_t(count), 0)
            if r >= 0 { return true }
            if errno != EINTR { return false }
        }
    }

    /// libslirp's get_revents for the entry at `index`.
    @inline(__always)
    func revents(_ index: Int32) -> Int32 {
        guard index >= 0 && Int(index) < count else { return 0 }
        let r = Int32(fds[Int(index)].revents)
        var out: Int32 = 0
        if r & Int32(POLLIN) != 0 { out |= Int32(SLIRP_POLL_IN) }
        if r & Int32(POLLOUT) != 0 { out |= Int32(SLIRP_POLL_OUT) }
        if r & Int32(POLLPRI) != 0 { out |= Int32(SLIRP_POLL_PRI) }
        if r & Int32(POLLERR | POLLNVAL) != 0 { out |= Int32(SLIRP_POLL_ERR) }
        if r & Int32(POLLHUP) != 0 { out |= Int32(SLIRP_POLL_HUP) }
        return out
    }
}
