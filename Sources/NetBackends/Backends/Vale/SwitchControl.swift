import CNetBackends
#if canImport(Glibc)
import Glibc
#endif

/// The `netbe switch` control socket: a unix SOCK_SEQPACKET socket, one message per
/// request or reply, text words (unix(7); descriptors travel as SCM_RIGHTS).
///
/// - `attach SWITCH PORT` -> `ok SLOTS BUFFER` with three descriptors: the sealed memfd
///   holding the port's rings (ring 0 TX, the client's to fill; ring 1 RX, the switch's),
///   the eventfd the client writes after publishing, the eventfd the switch writes; or
///   `error ERRNO TEXT`. The connection stays open: its end frees the port.
/// - `features N` (after attach): the virtio-net features the client's frontend accepted
///   (decimal), so that the switch sends it only what it takes.
/// - `ports [SWITCH]` -> `ok JSON`.
/// Frames on the rings always carry a 12-byte virtio-net header.
public enum SwitchControl {
    /// Bytes of one message at most (a `ports` reply is the largest).
    static let maximumMessage = 1 << 20
    public static let ringHeaderLength = VirtioNetHeader.mergeableLength

    /// Where `netbe switch` listens and `vale*` ports look by default (CONTRACT.md):
    /// `/run/netbe/switch.sock` for root, else `$XDG_RUNTIME_DIR/netbe/switch.sock`.
    public static func defaultSocketPath() throws(NetBackendError) -> String {
        if geteuid() == 0 { return "/run/netbe/switch.sock" }
        guard let dir = getenv("XDG_RUNTIME_DIR").map({ String(cString: $0) }), !dir.isEmpty else {
            throw .badSpec("no switch socket: XDG_RUNTIME_DIR is not set (give switch=PATH or --socket PATH)")
        }
        return dir + "/netbe/switch.sock"
    }

    /// Sends `text` with `fds` attached (none: a plain message). Blocking socket.
    static func send(_ fd: Int32, _ text: String, fds: [Int32] = [], device: String) throws(SystemCallError) {
        let bytes = Array(text.utf8)
        let controlSize = fds.isEmpty ? 0 : cmsgSpace(fds.count)
        let control = UnsafeMutableRawPointer.allocate(byteCount: max(controlSize, 8), alignment: 8)
        defer { control.deallocate() }
        control.initializeMemory(as: UInt8.self, repeating: 0, count: max(controlSize, 8))
        if !fds.isEmpty {
            let h = control.assumingMemoryBound(to: cmsghdr.self)
            h.pointee.cmsg_len = cmsgLength(fds.count)
            h.pointee.cmsg_level = SOL_SOCKET
            h.pointee.cmsg_type = Int32(SCM_RIGHTS)
            for (i, d) in fds.enumerated() { (control + MemoryLayout<cmsghdr>.size + 4 * i).storeBytes(of: d, as: Int32.self) }
        }
        let n = bytes.count
        let data = UnsafeMutableRawPointer.allocate(byteCount: max(n, 1), alignment: 8)
        defer { data.deallocate() }
        bytes.withUnsafeBytes { data.copyMemory(from: $0.baseAddress!, byteCount: n) }
        let iov = UnsafeMutablePointer<iovec>.allocate(capacity: 1)
        defer { iov.deallocate() }
        iov.initialize(to: iovec(iov_base: data, iov_len: n))
        var m = msghdr()
        m.msg_iov = iov
        m.msg_iovlen = 1
        if !fds.isEmpty {
            m.msg_control = control
            m.msg_controllen = controlSize
        }
        try Syscall.check("sendmsg", device: device) { Int32(truncatingIfNeeded: Glibc.sendmsg(fd, &m, cnb_MSG_NOSIGNAL)) }
    }

    /// One message and the descriptors that came with it (close-on-exec); nil at the
    /// peer's end. `wouldBlock` true on a non-blocking socket with nothing waiting.
    static func receive(_ fd: Int32, device: String, dontWait: Bool = false) throws(SystemCallError) -> (text: String, fds: [Int32])?? {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: maximumMessage, alignment: 8)
        defer { buffer.deallocate() }
        let controlSize = cmsgSpace(8)
        let control = UnsafeMutableRawPointer.allocate(byteCount: controlSize, alignment: 8)
        defer { control.deallocate() }
        var iov = iovec(iov_base: buffer, iov_len: maximumMessage)
        var m = msghdr()
        let result: IOResult = try withUnsafeMutablePointer(to: &iov) { (iovp) throws(SystemCallError) -> IOResult in
            m.msg_iov = iovp
            m.msg_iovlen = 1
            m.msg_control = control
            m.msg_controllen = controlSize
            return try Syscall.run("recvmsg", device: device) {
                Glibc.recvmsg(fd, &m, Int32(MSG_CMSG_CLOEXEC) | (dontWait ? cnb_MSG_DONTWAIT : 0))
            }
        }
        guard case .processed(let n) = result else { return .some(nil) }
        // Descriptors first, so that none leaks whatever the text says.
        var fds: [Int32] = []
        if m.msg_controllen >= MemoryLayout<cmsghdr>.size {
            let h = control.load(as: cmsghdr.self)
            if h.cmsg_level == SOL_SOCKET && h.cmsg_type == Int32(SCM_RIGHTS) {
                let count = (Int(h.cmsg_len) - MemoryLayout<cmsghdr>.size) / 4
                for i in 0..<max(0, min(count, 8)) { fds.append((control + MemoryLayout<cmsghdr>.size + 4 * i).load(as: Int32.self)) }
            }
        }
        if n == 0 && fds.isEmpty { return nil }
        if m.msg_flags & Int32(MSG_TRUNC | MSG_CTRUNC) != 0 {
            for d in fds { close(d) }
            throw SystemCallError(call: "recvmsg (message or descriptors truncated)", device: device, errno: EMSGSIZE)
        }
        return .some((String(decoding: UnsafeRawBufferPointer(start: buffer, count: n), as: UTF8.self), fds))
    }

    private static func cmsgLength(_ fds: Int) -> Int { MemoryLayout<cmsghdr>.size + 4 * fds }
    private static func cmsgSpace(_ fds: Int) -> Int { (cmsgLength(fds) + 7) & ~7 }

    /// A blocking, close-on-exec SOCK_SEQPACKET socket connected to `path`.
    static func connect(_ path: String) throws(SystemCallError) -> Int32 {
        let fd = try SocketCall.make(family: AF_UNIX, type: SocketCall.seqpacket, blocking: true, device: path)
        let address = ResolvedSocketAddress(unixPath: path)
        do {
            try Syscall.check("connect", device: path) { address.withSockaddr { Glibc.connect(fd, $0, $1) } }
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    /// Waits up to `milliseconds` for `fd` to be readable; false on timeout.
    static func waitReadable(_ fd: Int32, milliseconds: Int32) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while true {
            let n = poll(&p, 1, milliseconds)
            if n < 0 && errno == EINTR { continue }
            return n > 0
        }
    }

    /// Sends a request and waits (up to 5 s) for its reply. Closes any descriptors a
    /// reply that is an error carried.
    public static func request(_ fd: Int32, _ text: String, device: String) throws(NetBackendError) -> (words: [Substring], body: String, fds: [Int32]) {
        do throws(SystemCallError) {
            try send(fd, text, device: device)
            guard waitReadable(fd, milliseconds: 5000) else {
                throw SystemCallError(call: "recvmsg (no reply within 5 s)", device: device, errno: ETIMEDOUT)
            }
            guard let reply = try receive(fd, device: device), let (body, fds) = reply else {
                throw SystemCallError(call: "recvmsg (the switch closed the connection)", device: device, errno: ECONNRESET)
            }
            let words = body.split(separator: " ", maxSplits: 2)
            if words.first == "ok" { return (words, body, fds) }
            for d in fds { close(d) }
            if words.first == "error", words.count >= 2, let e = Int32(words[1]) {
                throw SystemCallError(call: text.split(separator: " ").first.map(String.init) ?? "request", device: device, errno: e,
                                      hint: words.count > 2 ? String(words[2]) : nil)
            }
            throw SystemCallError(call: "reply '\(body.prefix(40))' makes no sense", device: device, errno: EPROTO)
        } catch {
            throw .system(error)
        }
    }
}

extension SwitchControl {
    /// A connection to the daemon at `path` for `request`s (`netbe ports`).
    public static func connectForRequests(_ path: String) throws(NetBackendError) -> Int32 {
        do { return try connect(path) } catch { throw .system(error) }
    }
}
