import CNetBackends
#if canImport(Glibc)
import Glibc
#endif
import NetBackends

/// A backend over one end of a unix datagram socketpair, one frame per datagram (the
/// framing of QEMU's `-netdev dgram`); the test holds the other end (`peer`). It is a
/// real kernel transport with real back-pressure: `sendmsg` says EAGAIN once the peer's
/// queue holds net.unix.max_dgram_qlen datagrams. Built only on the public subclassing
/// API that a library user's own kind would use.
final class DatagramPairBackend: NetBackend, @unchecked Sendable {
    private var fd: Int32
    private(set) var peer: Int32

    private let headerLength: Int
    /// Sends that found the socket full (read after the loop stopped).
    private(set) var blockedSends = 0
    private let offloads: VirtioNetFeatures

    /// `headerLength` 10 or 12 makes every datagram carry a virtio-net header (the test
    /// writes and reads it), and `offloads` what the backend offers, as a tap would.
    /// `sendBuffer` shrinks SO_SNDBUF, which is what limits a socketpair's datagrams in
    /// flight (the max_dgram_qlen limit does not apply between mutually connected ends).
    init(loop: NetEventLoop, headerLength: Int = 0, offloads: VirtioNetFeatures = [], sendBuffer: Int32? = nil) throws {
        self.headerLength = headerLength
        self.offloads = offloads
        var fds: [Int32] = [-1, -1]
        let type = cnb_SOCK_DGRAM | cnb_SOCK_NONBLOCK | cnb_SOCK_CLOEXEC
        guard socketpair(AF_UNIX, type, 0, &fds) == 0 else {
            throw SystemCallError(call: "socketpair", device: "dgram pair", errno: errno)
        }
        fd = fds[0]
        peer = fds[1]
        if var size = sendBuffer {
            _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        super.init(spec: try BackendSpec(parsing: "dgrampair"), kind: "dgrampair", name: "dgram-pair", eventLoop: loop)
        try watch(fd: fd)
    }

    deinit { close() }

    override var capabilities: VirtioNetFeatures { offloads }
    override var supportedHeaderLengths: [Int] { headerLength > 0 ? [headerLength] : [0] }
    override var prefersSuperFrames: Bool { headerLength > 0 }
    override func configure(features: VirtioNetFeatures, vnetHeaderLength: Int) throws(NetBackendError) -> Int {
        headerLength > 0 ? vnetHeaderLength : 0
    }

    override func send(_ frame: UnsafeBufferPointer<iovec>, more: Bool) throws(NetBackendError) -> SendResult {
        var msg = msghdr()
        msg.msg_iov = UnsafeMutablePointer(mutating: frame.baseAddress)
        msg.msg_iovlen = frame.count
        let n = sendmsg(fd, &msg, 0)
        if n >= 0 { return .sent(n) }
        if errno == EAGAIN {
            blockedSends += 1
            armWritable()
            return .wouldBlock
        }
        throw .system(SystemCallError(call: "sendmsg", device: name, errno: errno))
    }

    override func receive(into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> ReceiveResult {
        var msg = msghdr()
        msg.msg_iov = UnsafeMutablePointer(mutating: buffers.baseAddress)
        msg.msg_iovlen = buffers.count
        let n = recvmsg(fd, &msg, cnb_MSG_TRUNC)
        if n < 0 {
            if errno == EAGAIN { return .empty }
            throw .system(SystemCallError(call: "recvmsg", device: name, errno: errno))
        }
        if msg.msg_flags & cnb_MSG_TRUNC != 0 {
            statistics.countDrop(.noSpace)
            return .dropped(length: n, reason: .noSpace)
        }
        return .frame(length: n)
    }

    override func close() {
        super.close()
        if fd >= 0 { _ = Glibc.close(fd); fd = -1 }
        if peer >= 0 { _ = Glibc.close(peer); peer = -1 }
    }
}
