import CNetBackends
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// One frame per datagram, as QEMU's `-netdev dgram`: `local=ADDR` (bound here) and
/// `remote=ADDR` (where frames go), both `unix:PATH` or `udp:HOST:PORT`.
/// - `remote=udp:GROUP:PORT` with an IPv4 multicast group makes a hub: every member
///   hears every other (see `DgramMulticast`).
/// - `vfkit=on`: the peer of Apple's `VZFileHandleNetworkDeviceAttachment` (see
///   `DgramVfkit`); only `local=unix:PATH`, the peer is learned, never connected.
///
/// Datagrams shorter than an Ethernet header or cut short (MSG_TRUNC) are dropped and
/// counted as `truncated`. A full socket buffer (EAGAIN, ENOBUFS) is back-pressure.
public final class DgramBackend: NetBackend, @unchecked Sendable {
    public static let kind = BackendKind(
        name: "dgram", prefixes: ["dgram"],
        summary: "one frame per unix or UDP datagram (QEMU -netdev dgram, UDP multicast hub, vfkit=on)",
        check: { (spec) throws(NetBackendError) in _ = try DgramBackend.options(spec) },
        open: { (spec, loop) throws(NetBackendError) in try DgramBackend(spec: spec, eventLoop: loop) }
    )

    enum Mode {
        case unicast
        case multicast
        case vfkit
    }

    let mode: Mode
    let local: NetSocketAddress?
    let remote: NetSocketAddress?
    var log: Logger { logger }

    /// Receives frames (and sends them, except for a multicast hub).
    var fd: Int32 = -1
    /// Sends frames: `fd`, or a multicast hub's own connected sender.
    var sendFD: Int32 = -1
    var source: EventSource?
    var sendSource: EventSource?
    private var retryTimer: EventSource?
    var boundUnixPath: String?
    /// Where frames go; for vfkit, the learned peer (length 0 until one is known).
    /// Mirrored into `destinationStorage`, which sendmsg reads without a copy.
    var destination = ResolvedSocketAddress() {
        didSet { destination.withSockaddr { p, len in destinationStorage.copyMemory(from: p, byteCount: Int(len)) } }
    }
    private var destinationStorage: UnsafeMutableRawPointer { destinationBox.pointer }
    private let destinationBox = SockaddrStorageBox()
    /// A hub member's own sender address: its frames come back looped and are skipped.
    var ownAddress: ResolvedSocketAddress?
    /// recvmsg's source address, preallocated.
    private var senderStorage: UnsafeMutableRawPointer { senderBox.pointer }
    private let senderBox = SockaddrStorageBox()
    private var senderWaiting = false
    private let isUDP: Bool
    /// A unix unicast socket is connected to `remote` whenever the peer is there: only a
    /// connected unix datagram socket gets a writable event when the peer's receive queue
    /// (net.unix.max_dgram_qlen, 10 datagrams by default) has room again; unconnected, a
    /// full peer could only be polled. A dead peer clears the association at the next
    /// send (ECONNREFUSED) and the connection is retried at a later send, once nothing
    /// waits in the receive queue (see `receiveQueueIsEmpty`).
    private var connectsToRemote = false
    private var connectedToRemote = false

    /// The spec's options, checked without opening anything.
    static func options(_ spec: BackendSpec) throws(NetBackendError) -> (NetSocketAddress?, NetSocketAddress?, Mode) {
        let r = SpecReader(spec)
        let localText = try r.string("local")
        let remoteText = try r.string("remote")
        let vfkit = try r.bool("vfkit", default: false)
        try r.finish(kind: "dgram")
        func bad(_ why: String) -> NetBackendError { .badSpec("bad spec '\(spec.text)': \(why)") }
        let local = try localText.map { (t) throws(NetBackendError) in try NetSocketAddress(parsing: t) }
        let remote = try remoteText.map { (t) throws(NetBackendError) in try NetSocketAddress(parsing: t) }
        for a in [local, remote].compactMap({ $0 }) {
            if case .tcp = a { throw bad("a dgram needs unix: or udp: addresses, not tcp:") }
        }
        if let l = local, let rm = remote, l.isUnix != rm.isUnix {
            throw bad("local= and remote= must both be unix: or both udp:")
        }
        if vfkit {
            guard case .unix? = local, remote == nil else {
                throw bad("vfkit=on takes local=unix:PATH only (the peer is learned from its first datagram)")
            }
            return (local, remote, .vfkit)
        } else if case .udp(let host, _)? = remote, DgramBackend.isMulticast(host) {
            return (local, remote, .multicast)
        } else {
            guard remote != nil else { throw bad("give remote=ADDR (or vfkit=on to learn the peer)") }
            if case .unix? = remote, local == nil { throw bad("a unix dgram needs local=unix:PATH too, or the peer cannot answer") }
            return (local, remote, .unicast)
        }
    }

    /// Opens and binds the socket(s) a spec describes; bad or inconsistent options throw
    /// `.badSpec`, a socket that cannot be bound `.system`.
    public init(spec: BackendSpec, eventLoop: NetEventLoop) throws(NetBackendError) {
        (local, remote, mode) = try Self.options(spec)
        isUDP = !(local ?? remote)!.isUnix
        super.init(spec: spec, kind: "dgram", name: (remote ?? local)!.description, eventLoop: eventLoop)
        do throws(NetBackendError) {
            switch mode {
            case .unicast: try openUnicast()
            case .multicast: try openMulticast()
            case .vfkit: try openVfkit()
            }
            try watchSockets()
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    private func openUnicast() throws(NetBackendError) {
        let remote = self.remote!
        destination = try remote.resolve()
        let localResolved = try local.flatMap { (l) throws(NetBackendError) in l.isUnix ? nil : try l.resolve() }
        do throws(SystemCallError) {
            fd = try SocketCall.make(family: destination.family, type: SocketCall.datagram, device: remote.description)
            sendFD = fd
            switch local {
            case .unix(let path)?:
                try SocketCall.bindUnix(fd, path: path, type: SocketCall.datagram)
                boundUnixPath = path
            case let l?:
                try SocketCall.bind(fd, localResolved!, device: l.description)
            case nil:
                break
            }
        } catch {
            throw .system(error)
        }
        connectsToRemote = remote.isUnix
        if connectsToRemote { connectedToRemote = connectRemote() }
        log.info("\(name): frames go to \(remote)\(local.map { ", bound at \($0)" } ?? "")")
    }

    private func watchSockets() throws(NetBackendError) {
        do {
            source = try eventLoop.watch(fd: fd, name: "dgram \(name)") { [weak self] ready in
                guard let self else { return }
                if ready.contains(.write) { self.source?.disable(.write); self.writable() }
                if ready.contains(.read) { self.notifyReceive() }
            }
            if sendFD != fd {
                sendSource = try eventLoop.watch(fd: sendFD, name: "dgram send \(name)") { [weak self] _ in
                    guard let self else { return }
                    self.sendSource?.disable(.write)
                    self.writable()
                }
            }
        } catch {
            throw .system(error)
        }
    }

    private func writable() {
        if senderWaiting {
            senderWaiting = false
            notifyWritable()
        }
    }

    /// Always up, except a vfkit host before it has heard from its peer.
    public override var isLinkUp: Bool { mode != .vfkit || destination.length > 0 }

    public override func watchReceive(_ on: Bool) {
        if on { source?.enable(.read) } else { source?.disable(.read) }
    }

    // MARK: receive

    /// One datagram straight into `buffers` (recvmsg); short or truncated ones come back
    /// as `.dropped(.truncated)`, a hub member's own and vfkit greetings are skipped.
    public override func receive(into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> ReceiveResult {
        while true {
            var message = msghdr()
            message.msg_iov = UnsafeMutablePointer(mutating: buffers.baseAddress)
            message.msg_iovlen = buffers.count
            message.msg_name = UnsafeMutableRawPointer(senderStorage)
            message.msg_namelen = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let result: IOResult
            do {
                result = try SocketCall.recvmsg(fd, &message, device: name)
            } catch {
                // ECONNREFUSED reports an earlier send that found nobody: not fatal here.
                if error.errno == ECONNREFUSED { continue }
                throw .system(error)
            }
            guard case .processed(let n) = result else { return .empty }
            if mode != .unicast {
                // Only a hub member and a vfkit host care who sent the datagram.
                let sender = ResolvedSocketAddress(copying: senderStorage, length: message.msg_namelen)
                if let own = ownAddress, sender.sameAs(own) { continue }
                if mode == .vfkit, !learnPeer(datagram: buffers, length: n, sender: sender) { continue }
            }
            if message.msg_flags & cnb_MSG_TRUNC != 0 || n < 14 {
                statistics.countDrop(.truncated)
                return .dropped(length: n, reason: .truncated)
            }
            return .frame(length: n)
        }
    }

    // MARK: send

    /// One frame as one datagram (sendmsg). A full socket is `.wouldBlock` and the
    /// writable handler follows; a peer that is not there is a `no_peer` drop.
    public override func send(_ frame: UnsafeBufferPointer<iovec>, more: Bool) throws(NetBackendError) -> SendResult {
        if destination.length == 0 && sendFD == fd {
            statistics.countDrop(.noPeer)
            return .dropped(.noPeer)
        }
        if connectsToRemote && !connectedToRemote && receiveQueueIsEmpty() { connectedToRemote = connectRemote() }
        var message = msghdr()
        message.msg_iov = UnsafeMutablePointer(mutating: frame.baseAddress)
        message.msg_iovlen = frame.count
        let result: IOResult
        do {
            // Sending to a connected unix peer that died purges our own receive queue,
            // frames it sent before leaving included (unix_dgram_disconnected). While
            // datagrams wait, the peer is named instead: a send by name finds no socket
            // there and leaves the queue alone. With the queue empty nothing can be lost,
            // and only then may the kernel drop the dead association (while it stands,
            // nobody else can queue to us: unix_may_send).
            if sendFD == fd && (!connectedToRemote || !receiveQueueIsEmpty()) {
                message.msg_name = destinationStorage
                message.msg_namelen = destination.length
            }
            result = try SocketCall.sendmsg(sendFD, &message, device: name)
        } catch {
            switch error.errno {
            case ECONNREFUSED, ENOENT, ENOTCONN, EDESTADDRREQ, EPERM:
                // The peer's socket is not there (yet, or any more): a dgram peer may come
                // and go. EPERM: the peer's socket is connected to another one.
                if connectedToRemote {
                    connectedToRemote = false
                    log.info("\(name): peer socket gone (\(error)); frames are dropped until it is back")
                }
                statistics.countDrop(.noPeer)
                return .dropped(.noPeer)
            case EMSGSIZE:
                statistics.countDrop(.malformed)
                return .dropped(.malformed)
            default:
                throw .system(error)
            }
        }
        switch result {
        case .wouldBlock:
            senderWaiting = true
            // EAGAIN on UDP and on a connected unix socket ends with a writable event;
            // ENOBUFS and full receivers of an unconnected unix socket do not signal
            // one, so a timer retries there.
            if isUDP || connectedToRemote { (sendSource ?? source)?.enable(.write) }
            if !connectedToRemote { armRetryTimer() }
            return .wouldBlock
        case .processed(let n):
            statistics.frames &+= 1
            statistics.bytes &+= UInt64(n)
            return .sent(n)
        }
    }

    /// A 2 ms timer that retries a blocked send where no writable event will come. Made on
    /// first need (most sockets never block); disabled again once it fired.
    private func armRetryTimer() {
        if retryTimer == nil {
            do {
                retryTimer = try eventLoop.addTimer(name: "dgram retry \(name)", intervalMilliseconds: 2) { [weak self] in
                    guard let self else { return }
                    self.retryTimer?.disable(.read)
                    self.writable()
                }
            } catch {
                // Without a timer the writable event (UDP) or the next frame retries.
                log.warning("\(name): \(error)")
            }
        } else {
            retryTimer?.enable(.read)
        }
    }

    /// Whether no datagram waits to be read (FIONREAD). Connecting away from a peer
    /// that died purges the receive queue, so that waits until it was read.
    private func receiveQueueIsEmpty() -> Bool {
        var waiting: Int32 = 0
        return cnb_ioctl_ptr(fd, UInt(FIONREAD), &waiting) < 0 || waiting == 0
    }

    /// connect(2) to `remote` (unix unicast only); false while the peer is not there.
    private func connectRemote() -> Bool {
        let ok = destination.withSockaddr { Glibc.connect(fd, $0, $1) } == 0
        if ok { log.info("\(name): connected to the peer's socket") }
        return ok
    }

    /// Closes the sockets and removes the unix socket file this backend bound.
    public override func close() {
        super.close()
        retryTimer?.cancel()
        retryTimer = nil
        sendSource?.cancel()
        sendSource = nil
        source?.cancel()
        source = nil
        if sendFD >= 0 && sendFD != fd { Glibc.close(sendFD) }
        sendFD = -1
        if fd >= 0 { Glibc.close(fd); fd = -1 }
        if let path = boundUnixPath {
            unlink(path)   // CONTRACT: sockets netbe created are removed when it stops
            boundUnixPath = nil
        }
    }
}

/// A `sockaddr_storage` for sendmsg/recvmsg to point at, allocated once per backend. A
/// box rather than a raw allocation in the backend: when the backend's init throws
/// before its deinit could run, the box still frees it.
final class SockaddrStorageBox {
    let pointer = UnsafeMutableRawPointer.allocate(byteCount: MemoryLayout<sockaddr_storage>.size, alignment: 16)
    deinit { pointer.deallocate() }
}
