import CNetBackends
import CSlirp
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// One libslirp instance driven by an `NetEventLoop` (API: libslirp.h of libslirp 4.7).
///
/// Everything runs on the loop thread. Each loop round, in a before-wait hook:
/// 1. the results of the previous wait are handed to libslirp (`poll(2)` with zero
///    timeout over last round's list, then `slirp_pollfds_poll`, which also runs
///    libslirp's TCP fast/slow timers);
/// 2. expired libslirp timers (the IPv6 router-advertisement timer) run;
/// 3. `slirp_pollfds_fill` lists this round's descriptors into `SlirpPollSet`, whose
///    epoll descriptor the loop watches, and the wait's timeout is lowered to what
///    libslirp and the timers need.
/// Frames libslirp emits land in `queue` (see `SlirpFrameQueue`).
/// The C callbacks are thin: they find this object through the opaque pointer.
final class SlirpStack: @unchecked Sendable {
    let queue: SlirpFrameQueue
    let configuration: SlirpConfiguration
    private var slirp: OpaquePointer?
    private let pollSet: SlirpPollSet
    private var timers: [SlirpTimer] = []
    private var filled = false
    private let log: Logger
    private var pollSource: EventSource?
    /// Called at the end of each loop round's libslirp work when frames wait in `queue`,
    /// so that a consumer can take them before the wait instead of one round later
    /// (the slirp helper writes them to its socket here). Set once, before the loop runs.
    var framesQueued: (() -> Void)?
    /// Where frames are built on their way in (a finished checksum, a segment).
    let scratch: UnsafeMutableRawPointer
    let scratchSize = maximumFrameLength

    /// Creates the stack and its port forwards. A forward whose host port cannot be
    /// bound throws `.badSpec` naming the rule and the port.
    init(_ c: SlirpConfiguration, specText: String, eventLoop: NetEventLoop) throws(NetBackendError) {
        configuration = c
        var log = eventLoop.logger
        log[metadataKey: "backend"] = "slirp"
        self.log = log
        do {
            // Room for a burst: at least 64 frames, up to 4 MiB of slots.
            let slots = max(64, min(1024, (4 << 20) / c.maximumFrame))
            queue = try SlirpFrameQueue(slotSize: c.maximumFrame, capacity: slots)
            pollSet = try SlirpPollSet()
        } catch {
            throw .system(error)
        }
        scratch = .allocate(byteCount: scratchSize, alignment: 64)
        var cfg = SlirpConfig()
        cfg.version = 4
        cfg.restricted = c.restricted ? 1 : 0
        cfg.in_enabled = true
        cfg.vnetwork = in_addr(s_addr: c.network)
        cfg.vnetmask = in_addr(s_addr: c.netmask)
        cfg.vhost = in_addr(s_addr: c.gateway)
        cfg.vdhcp_start = in_addr(s_addr: c.dhcpStart)
        cfg.vnameserver = in_addr(s_addr: c.dns)
        cfg.in6_enabled = c.ipv6
        cfg.vprefix_addr6 = Self.in6(c.ipv6Prefix, last: 0)
        cfg.vprefix_len = UInt8(c.ipv6PrefixLength)
        cfg.vhost6 = Self.in6(c.ipv6Prefix, last: 2)
        cfg.vnameserver6 = Self.in6(c.ipv6Prefix, last: 3)
        cfg.if_mtu = c.mtu
        cfg.if_mru = c.mtu
        cfg.disable_host_loopback = false
        cfg.enable_emu = false
        let opaque = Unmanaged.passUnretained(self).toOpaque()
        guard let s = slirp_new(&cfg, slirpCallbacks, opaque) else {
            throw .unavailable("\(specText): libslirp refused the configuration (slirp_new failed)")
        }
        slirp = s
        for f in c.hostForwards {
            let r = slirp_add_hostfwd(s, f.udp ? 1 : 0, in_addr(s_addr: f.hostAddress), Int32(f.hostPort),
                                      in_addr(s_addr: f.guestAddress), Int32(f.guestPort))
            if r < 0 {
                let why = String(cString: strerror(errno))
                close()
                throw .badSpec("bad spec '\(specText)': hostfwd=\(f.text): host port \(f.hostPort) (\(f.udp ? "udp" : "tcp") on \(SlirpConfiguration.text(f.hostAddress))) cannot be bound: \(why)")
            }
        }
        do {
            pollSource = try eventLoop.watch(fd: pollSet.epollFD, name: "slirp sockets") { _ in
                // Nothing to do here: the wait ended, and the before-wait hook that runs
                // next hands the results to libslirp.
            }
        } catch {
            close()
            throw .system(error)
        }
        pollSource?.enable(.read)
        eventLoop.addBeforeWaitHook { [weak self] timeout in self?.beforeWait(&timeout) }
    }

    deinit {
        close()
        scratch.deallocate()
    }

    func close() {
        pollSource?.cancel()
        pollSource = nil
        if let s = slirp {
            slirp = nil
            slirp_cleanup(s)
        }
        for t in timers { Unmanaged.passUnretained(t).release() }
        timers.removeAll()
    }

    static func in6(_ prefix: [UInt8], last: UInt8) -> in6_addr {
        var a = in6_addr()
        withUnsafeMutableBytes(of: &a) { b in
            for i in 0..<16 { b[i] = prefix[i] }
            if last != 0 { b[15] = last }
        }
        return a
    }

    /// Hands a frame from the guest to libslirp. Replies it makes at once are queued.
    @inline(__always)
    func input(_ frame: UnsafeRawPointer, length: Int) {
        guard let s = slirp else { return }
        slirp_input(s, frame.assumingMemoryBound(to: UInt8.self), Int32(length))
    }

    // MARK: the loop round

    private func beforeWait(_ timeout: inout Int32) {
        guard let s = slirp else { return }
        let opaque = Unmanaged.passUnretained(self).toOpaque()
        if filled {
            let ok = pollSet.pollNow()
            slirp_pollfds_poll(s, ok ? 0 : 1, { index, opaque in
                SlirpStack.from(opaque).pollSet.revents(index)
            }, opaque)
        }
        let now = Self.nowMilliseconds()
        var next = Int64.max
        // A timer callback may re-arm or free timers: iterate over indices, re-checking.
        var i = 0
        while i < timers.count {
            let t = timers[i]
            if t.expire >= 0 && t.expire <= now {
                t.expire = -1
                slirp_handle_timer(s, t.id, t.callbackOpaque)
            } else if t.expire >= 0 {
                next = min(next, t.expire)
            }
            i += 1
        }
        pollSet.beginFill()
        var wait = UInt32.max
        slirp_pollfds_fill(s, &wait, { fd, events, opaque in
            SlirpStack.from(opaque).pollSet.add(fd: fd, slirpEvents: events)
        }, opaque)
        pollSet.endFill()
        filled = true
        var ms: Int64 = wait == UInt32.max ? -1 : Int64(wait)
        if next != Int64.max {
            let untilTimer = max(0, next - Self.nowMilliseconds())
            ms = ms < 0 ? untilTimer : min(ms, untilTimer)
        }
        if ms >= 0 && (timeout < 0 || ms < Int64(timeout)) { timeout = Int32(min(ms, Int64(Int32.max))) }
        if !queue.isEmpty, let f = framesQueued { f() }
    }

    // MARK: callbacks

    static func from(_ opaque: UnsafeMutableRawPointer?) -> SlirpStack {
        Unmanaged<SlirpStack>.fromOpaque(opaque!).takeUnretainedValue()
    }

    static func nowNanoseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    static func nowMilliseconds() -> Int64 { nowNanoseconds() / 1_000_000 }

    fileprivate func guestError(_ message: String) {
        log.warning("slirp: guest error: \(message)")
    }

    fileprivate func newTimer(_ id: SlirpTimerId, _ callbackOpaque: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer {
        let t = SlirpTimer(id: id, callbackOpaque: callbackOpaque)
        timers.append(t)
        return Unmanaged.passRetained(t).toOpaque()
    }

    fileprivate func freeTimer(_ p: UnsafeMutableRawPointer) {
        let t = Unmanaged<SlirpTimer>.fromOpaque(p)
        let obj = t.takeUnretainedValue()
        timers.removeAll { $0 === obj }
        t.release()
    }

    fileprivate func unregister(fd: Int32) { pollSet.unregister(fd: fd) }
}

/// A libslirp timer (timer_new_opaque API): fires `slirp_handle_timer(id, opaque)` at
/// `expire` (milliseconds on the CLOCK_MONOTONIC clock given to libslirp), -1 = off.
final class SlirpTimer {
    let id: SlirpTimerId
    let callbackOpaque: UnsafeMutableRawPointer?
    var expire: Int64 = -1

    init(id: SlirpTimerId, callbackOpaque: UnsafeMutableRawPointer?) {
        self.id = id
        self.callbackOpaque = callbackOpaque
    }
}

/// The callback table libslirp keeps a pointer to for the life of each instance, so it
/// lives in static storage. Every entry only forwards to the `SlirpStack` behind `opaque`.
nonisolated(unsafe) private let slirpCallbacks: UnsafeMutablePointer<SlirpCb> = {
    var cb = SlirpCb()
    cb.send_packet = { buf, len, opaque in
        guard let buf else { return -1 }
        SlirpStack.from(opaque).queue.push(buf, length: len)
        return len
    }
    cb.guest_error = { msg, opaque in
        SlirpStack.from(opaque).guestError(msg.map { String(cString: $0) } ?? "?")
    }
    cb.clock_get_ns = { _ in SlirpStack.nowNanoseconds() }
    cb.timer_new_opaque = { id, cbOpaque, opaque in
        SlirpStack.from(opaque).newTimer(id, cbOpaque)
    }
    cb.timer_free = { timer, opaque in
        if let timer { SlirpStack.from(opaque).freeTimer(timer) }
    }
    cb.timer_mod = { timer, expire, _ in
        if let timer { Unmanaged<SlirpTimer>.fromOpaque(timer).takeUnretainedValue().expire = expire }
    }
    cb.register_poll_fd = { _, _ in }
    cb.unregister_poll_fd = { fd, opaque in SlirpStack.from(opaque).unregister(fd: fd) }
    // libslirp asks to be polled again soon; our hook polls it before every wait anyway.
    cb.notify = { _ in }
    let p = UnsafeMutablePointer<SlirpCb>.allocate(capacity: 1)
    p.initialize(to: cb)
    return p
}()
