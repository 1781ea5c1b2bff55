#if canImport(Glibc)
import Glibc
#endif

/// A backend on one end of a `SOCK_SEQPACKET` unix socket: one frame per message, no
/// header (bhyve's slirp helper protocol). `receive` detects a frame longer than the
/// caller's buffers with MSG_TRUNC and drops it whole; `peekReceiveLength` asks the
/// kernel with MSG_PEEK|MSG_TRUNC. When the peer goes away `peerGone` decides: by
/// default the backend reports `.deviceGone`.
public class SeqpacketBackend: NetBackend, @unchecked Sendable {
    /// The socket, or -1 while no peer is attached.
    public private(set) var fd: Int32 = -1
    private var header = msghdr()

    public init(spec: BackendSpec, kind: String, name: String, fd: Int32, eventLoop: EventLoop) throws(NetBackendError) {
        super.init(spec: spec, kind: kind, name: name, eventLoop: eventLoop)
        try attach(fd: fd)
    }

    deinit { detach() }

    /// Takes `fd` (non-blocking, owned from now on) as the socket and watches it.
    public final func attach(fd newFD: Int32) throws(NetBackendError) {
        detach()
        fd = newFD
        // Room for bursts: a seqpacket socket's buffer counts whole messages.
        var size: Int32 = 4 << 20
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(4))
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(4))
        try watch(fd: fd)
        if receiveWanted { super.enableReceive() }
    }

    /// Stops watching and closes the socket.
    public final func detach() {
        super.close()
        if fd >= 0 {
            _ = Glibc.close(fd)
            fd = -1
        }
    }

    private var receiveWanted = false

    public override func enableReceive() {
        receiveWanted = true
        super.enableReceive()
    }

    public override func disableReceive() {
        receiveWanted = false
        super.disableReceive()
    }

    /// Called on the loop thread when the peer closed its end or reset. The default
    /// throws `.deviceGone`; a subclass may re-attach instead and return normally.
    open func peerGone(_ why: String) throws(NetBackendError) {
        throw .deviceGone("\(name): \(why)")
    }

    public override func send(_ frame: UnsafeBufferPointer<iovec>, more: Bool) throws(NetBackendError) -> SendResult {
        guard fd >= 0 else { statistics.countDrop(.noPeer); return .dropped(.noPeer) }
        header.msg_iov = UnsafeMutablePointer(mutating: frame.baseAddress)
        header.msg_iovlen = frame.count
        while true {
            let n = sendmsg(fd, &header, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
            if n >= 0 {
                statistics.frames &+= 1
                statistics.bytes &+= UInt64(n)
                return .sent(n)
            }
            switch errno {
            case EINTR: continue
            case EAGAIN, ENOBUFS:
                armWritable()
                return .wouldBlock
            case EMSGSIZE:
                statistics.countDrop(.malformed)
                return .dropped(.malformed)
            case EPIPE, ECONNRESET, ENOTCONN:
                try peerGone("the peer closed its socket")
                statistics.countDrop(.noPeer)
                return .dropped(.noPeer)
            default:
                throw .system(SystemCallError(call: "sendmsg", device: name, errno: errno))
            }
        }
    }

    public override func receive(into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> ReceiveResult {
        guard fd >= 0 else { return .empty }
        header.msg_iov = UnsafeMutablePointer(mutating: buffers.baseAddress)
        header.msg_iovlen = buffers.count
        header.msg_flags = 0
        while true {
            // MSG_TRUNC: the return value is the whole message's length even when cut.
            let n = recvmsg(fd, &header, Int32(MSG_DONTWAIT | MSG_TRUNC))
            if n > 0 {
                if header.msg_flags & Int32(MSG_TRUNC) != 0 {
                    statistics.countDrop(.noSpace)
                    return .dropped(length: n, reason: .noSpace)
                }
                return .frame(length: n)
            }
            if n == 0 {
                // Frames are never empty: 0 is the peer's end of file.
                try peerGone("the peer closed its socket")
                return .empty
            }
            switch errno {
            case EINTR: continue
            case EAGAIN: return .empty
            case ECONNRESET:
                try peerGone("the peer reset its socket")
                return .empty
            default:
                throw .system(SystemCallError(call: "recvmsg", device: name, errno: errno))
            }
        }
    }

    public override func peekReceiveLength() throws(NetBackendError) -> Int {
        guard fd >= 0 else { return 0 }
        let n = recv(fd, nil, 0, Int32(MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT))
        return n > 0 ? n : 0
    }

    public override func close() { detach() }
}
