import CNetBackends
#if canImport(Glibc)
import Glibc
#endif

/// One frontend connection's message stream: reads whole messages (a header, then its
/// payload, which may arrive in pieces) with the descriptors that came along, and writes
/// replies. A header that announces more payload than any request of this server carries
/// is a protocol error before anything more is read.
final class VhostUserChannel {
    let fd: Int32
    let device: String
    private let buffer: UnsafeMutableRawPointer
    private var have = 0
    /// Descriptors received with the message being read (closed unless taken).
    private(set) var fds: [Int32] = []
    private let fdScratch = UnsafeMutablePointer<Int32>.allocate(capacity: 16)
    private let replyBuffer = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 8)

    enum ReadResult {
        case message(request: UInt32, flags: UInt32, payload: UnsafeRawBufferPointer)
        case incomplete
        case closed
        case protocolError(String)
    }

    init(fd: Int32, device: String) {
        self.fd = fd
        self.device = device
        buffer = .allocate(byteCount: VhostUserMessage.headerLength + VhostUserMessage.maximumPayload, alignment: 8)
    }

    deinit {
        closeFDs()
        buffer.deallocate()
        fdScratch.deallocate()
        replyBuffer.deallocate()
        _ = Glibc.close(fd)
    }

    /// Closes the descriptors of the last message that its handler did not take.
    func closeFDs() {
        for f in fds where f >= 0 { _ = Glibc.close(f) }
        fds.removeAll()
    }

    /// Takes descriptor `i` of the current message (the caller closes it).
    func takeFD(_ i: Int) -> Int32 {
        let f = fds[i]
        fds[i] = -1
        return f
    }

    /// Reads what is there; a whole message once all of it arrived. Call `finish` after
    /// handling it.
    func read() throws(SystemCallError) -> ReadResult {
        let header = VhostUserMessage.headerLength
        var want = header
        if have >= header {
            let size = Int(buffer.load(fromByteOffset: 8, as: UInt32.self))
            guard size <= VhostUserMessage.maximumPayload else {
                return .protocolError("a message announces \(size) payload bytes, more than the \(VhostUserMessage.maximumPayload) any request here carries")
            }
            want = header + size
        }
        while have < want {
            var nfds: Int32 = 0
            var truncated: Int32 = 0
            let n = cnb_vhost_recv(fd, buffer + have, want - have, fdScratch, 16, &nfds, &truncated)
            if n < 0 {
                let e = errno
                if e == EINTR { continue }
                if e == EAGAIN { return .incomplete }
                if e == ECONNRESET { return .closed }
                throw SystemCallError(call: "recvmsg", device: device, errno: e)
            }
            for i in 0..<Int(nfds) { fds.append(fdScratch[i]) }
            if truncated != 0 { return .protocolError("more descriptors than a message may carry") }
            if n == 0 { return .closed }
            have += n
            if have == header && want == header {
                let size = Int(buffer.load(fromByteOffset: 8, as: UInt32.self))
                guard size <= VhostUserMessage.maximumPayload else {
                    return .protocolError("a message announces \(size) payload bytes, more than the \(VhostUserMessage.maximumPayload) any request here carries")
                }
                want = header + size
            }
        }
        let request = buffer.load(as: UInt32.self)
        let flags = buffer.load(fromByteOffset: 4, as: UInt32.self)
        return .message(request: request, flags: flags,
                        payload: UnsafeRawBufferPointer(start: buffer + header, count: want - header))
    }

    /// Ends the current message: its unclaimed descriptors are closed.
    func finish() {
        have = 0
        closeFDs()
    }

    /// Sends a reply: the header and `count` payload bytes already in `replyPayload`. A
    /// reply that does not fit the socket buffer at once is an error (the loop must not block).
    private func sendReply(_ request: UInt32, _ count: Int) throws(SystemCallError) {
        replyBuffer.storeBytes(of: request, as: UInt32.self)
        replyBuffer.storeBytes(of: VhostUserMessage.version | VhostUserMessage.replyFlag, toByteOffset: 4, as: UInt32.self)
        replyBuffer.storeBytes(of: UInt32(count), toByteOffset: 8, as: UInt32.self)
        let total = VhostUserMessage.headerLength + count
        let r = try Syscall.send(fd, replyBuffer, total, flags: cnb_MSG_NOSIGNAL | cnb_MSG_DONTWAIT, device: device)
        guard r == .processed(total) else { throw SystemCallError(call: "send (reply)", device: device, errno: EAGAIN) }
    }

    func reply(_ request: UInt32, u64 value: UInt64) throws(SystemCallError) {
        replyBuffer.storeBytes(of: value, toByteOffset: VhostUserMessage.headerLength, as: UInt64.self)
        try sendReply(request, 8)
    }

    /// A vhost_vring_state reply: a queue index and a number.
    func reply(_ request: UInt32, index: UInt32, num: UInt32) throws(SystemCallError) {
        replyBuffer.storeBytes(of: index, toByteOffset: VhostUserMessage.headerLength, as: UInt32.self)
        replyBuffer.storeBytes(of: num, toByteOffset: VhostUserMessage.headerLength + 4, as: UInt32.self)
        try sendReply(request, 8)
    }
}
