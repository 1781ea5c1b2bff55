#if canImport(Glibc)
import CNetBackends
import Glibc
#endif

/// Socket system calls shared by the stream and dgram backends. Each throws a
/// `SystemCallError` naming the call, the address and errno (socket(7), unix(7), ip(7)).
enum SocketCall {
    static let stream = cnb_SOCK_STREAM
    static let datagram = cnb_SOCK_DGRAM
    static let seqpacket = cnb_SOCK_SEQPACKET
    static let cloexec = cnb_SOCK_CLOEXEC
    static let nonblocking = cnb_SOCK_NONBLOCK

    /// A new close-on-exec socket, non-blocking unless `blocking`.
    static func make(family: Int32, type: Int32, blocking: Bool = false, device: String) throws(SystemCallError) -> Int32 {
        let flags = cloexec | (blocking ? 0 : nonblocking)
        return try Syscall.check("socket", device: device) { socket(family, type | flags, 0) }
    }

    /// A connected unix socketpair of `type`, close-on-exec, both ends blocking.
    static func pair(type: Int32, device: String) throws(SystemCallError) -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        try Syscall.check("socketpair", device: device) { socketpair(AF_UNIX, type | cloexec, 0, &fds) }
        return (fds[0], fds[1])
    }

    static func setNonBlocking(_ fd: Int32, device: String) throws(SystemCallError) {
        let flags = try Syscall.check("fcntl F_GETFL", device: device) { fcntl(fd, F_GETFL) }
        try Syscall.check("fcntl F_SETFL", device: device) { fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
    }

    static func setInt(_ fd: Int32, _ level: Int32, _ option: Int32, _ value: Int32, call: String, device: String) throws(SystemCallError) {
        var v = value
        try Syscall.check("setsockopt \(call)", device: device) {
            setsockopt(fd, level, option, &v, socklen_t(MemoryLayout<Int32>.size))
        }
    }

    static func getInt(_ fd: Int32, _ level: Int32, _ option: Int32, call: String, device: String) throws(SystemCallError) -> Int32 {
        var v: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        try Syscall.check("getsockopt \(call)", device: device) { getsockopt(fd, level, option, &v, &len) }
        return v
    }

    /// Turns Nagle off: a frame goes out at once, as QEMU and passt expect.
    static func noDelay(_ fd: Int32, device: String) throws(SystemCallError) {
        try setInt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1, call: "TCP_NODELAY", device: device)
    }

    static func bind(_ fd: Int32, _ address: ResolvedSocketAddress, device: String) throws(SystemCallError) {
        try Syscall.check("bind", device: device) { address.withSockaddr { Glibc.bind(fd, $0, $1) } }
    }

    /// Binds a unix socket at `path`. A socket file left by a dead process (connect
    /// refused) is removed first; a live one is an error, never stolen.
    static func bindUnix(_ fd: Int32, path: String, type: Int32) throws(SystemCallError) {
        let address = ResolvedSocketAddress(unixPath: path)
        do {
            try Syscall.check("bind", device: path) { address.withSockaddr { Glibc.bind(fd, $0, $1) } }
            return
        } catch {
            guard error.errno == EADDRINUSE, isStale(path: path, type: type) else {
                throw SystemCallError(call: "bind", device: path, errno: error.errno,
                                      hint: error.errno == EADDRINUSE ? "another process is serving this socket" : nil)
            }
        }
        unlink(path)
        try bind(fd, address, device: path)
    }

    /// A unix socket file nobody serves: connecting to it is refused.
    private static func isStale(path: String, type: Int32) -> Bool {
        guard let probe = try? make(family: AF_UNIX, type: type, blocking: true, device: path) else { return false }
        defer { close(probe) }
        let rc = ResolvedSocketAddress(unixPath: path).withSockaddr { Glibc.connect(probe, $0, $1) }
        return rc < 0 && errno == ECONNREFUSED
    }

    /// The address the socket is bound to (getsockname(2)).
    static func localAddress(_ fd: Int32, device: String) throws(SystemCallError) -> ResolvedSocketAddress {
        var a = ResolvedSocketAddress()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        try Syscall.check("getsockname", device: device) {
            withUnsafeMutableBytes(of: &a.storage) { getsockname(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), &len) }
        }
        a.length = len
        return a
    }

    /// sendmsg(2) without SIGPIPE; EAGAIN and ENOBUFS are `.wouldBlock`.
    @inline(__always)
    static func sendmsg(_ fd: Int32, _ message: UnsafePointer<msghdr>, device: @autoclosure () -> String) throws(SystemCallError) -> IOResult {
        try Syscall.sendmsg(fd, message, flags: cnb_MSG_NOSIGNAL, device: device())
    }

    /// recvmsg(2); `.wouldBlock` when nothing waits.
    @inline(__always)
    static func recvmsg(_ fd: Int32, _ message: UnsafeMutablePointer<msghdr>, device: @autoclosure () -> String) throws(SystemCallError) -> IOResult {
        try Syscall.recvmsg(fd, message, flags: cnb_MSG_DONTWAIT, device: device())
    }

    /// Asks for a send or receive buffer of `size` bytes: the FORCE option first (it may
    /// pass net.core.*mem_max, with CAP_NET_ADMIN), else the plain one, which the kernel
    /// caps. Returns the size the kernel reports afterwards (socket(7)).
    static func requestBuffer(_ fd: Int32, send: Bool, size: Int32, device: String) throws(SystemCallError) -> Int32 {
        let (option, force, label) = send ? (SO_SNDBUF, SO_SNDBUFFORCE, "SO_SNDBUF") : (SO_RCVBUF, SO_RCVBUFFORCE, "SO_RCVBUF")
        do {
            try setInt(fd, SOL_SOCKET, force, size, call: label + "FORCE", device: device)
        } catch {
            try setInt(fd, SOL_SOCKET, option, size, call: label, device: device)
        }
        return try getInt(fd, SOL_SOCKET, option, call: label, device: device)
    }
}
