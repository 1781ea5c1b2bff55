import CNetBackends
#if canImport(Glibc)
import Glibc
#endif

/// Fuzzing entry point (Fuzz/, `@_spi(Fuzzing)`): messages a seqpacket peer (the slirp
/// helper) could send reach netbe's `SeqpacketBackend` through a real socketpair and its
/// event loop, and are received as a frontend with a 0-, 10- or 12-byte header would:
/// the 12-byte link header converted or stripped, short and cut messages dropped.
/// Input: byte 0 picks the frontend's header length, then messages, each
/// `[u16 big-endian length][bytes]` (empty ones are left out: an empty message is how
/// recvmmsg reports the peer's end of file).
@_spi(Fuzzing) public enum SeqpacketFuzzing {
    /// A seqpacket backend whose frontend may pick any header length.
    final class Backend: SeqpacketBackend, @unchecked Sendable {
        override var supportedHeaderLengths: [Int] { [0, 10, 12] }
        override func configure(features: VirtioNetFeatures, vnetHeaderLength length: Int) throws(NetBackendError) -> Int { length }
    }

    private final class Fixture: @unchecked Sendable {
        let loop: NetEventLoop
        let backend: Backend
        let peer: Int32
        let frame = FrameBuffer()

        init(headerLength: Int) {
            var fds: [Int32] = [-1, -1]
            fuzzCheck(socketpair(AF_UNIX, cnb_SOCK_SEQPACKET | cnb_SOCK_NONBLOCK, 0, &fds) == 0, "socketpair failed")
            peer = fds[1]
            var size: Int32 = 8 << 20
            _ = setsockopt(peer, SOL_SOCKET, SO_SNDBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size))
            loop = try! NetEventLoop()
            backend = try! Backend(spec: try! BackendSpec(parsing: "seqpacket"), kind: "seqpacket", name: "fuzz",
                                   fd: fds[0], linkHeaderLength: VirtioNetHeader.mergeableLength, eventLoop: loop)
            backend.setReceiveHandler { [unowned self] in self.receiveAll() }
            try! backend.setCapabilities([], vnetHeaderLength: headerLength)
            backend.enableReceive()
        }

        func close() {
            backend.close()
            _ = Glibc.close(peer)
        }

        /// Receives until `.empty`; stops the loop once the socket holds nothing more.
        func receiveAll() {
            while true {
                let peeked = (try? backend.peekReceiveLength()) ?? 0
                let r: ReceiveResult
                do { r = try backend.receive(into: frame) } catch { fatalError("receive threw \(error)") }
                switch r {
                case .frame(let length):
                    fuzzCheck(length == peeked, "peekReceiveLength said \(peeked), the frame has \(length) bytes")
                    fuzzCheck(length >= backend.vnetHeaderLength + 14 || backend.vnetHeaderLength == VirtioNetHeader.mergeableLength,
                                 "a frame of \(length) bytes was delivered")
                    _ = frame.header(length: backend.vnetHeaderLength)
                case .dropped:
                    continue
                case .empty:
                    if recv(backend.fd, nil, 0, cnb_MSG_PEEK | cnb_MSG_DONTWAIT) < 0 && errno == EAGAIN { loop.stop() }
                    return
                }
            }
        }
    }

    public static func run(_ data: UnsafeRawBufferPointer) {
        guard data.count >= 1 else { return }
        // A new loop each time: a stopped NetEventLoop does not run again.
        let f = Fixture(headerLength: [0, 10, 12][Int(data[0]) % 3])
        defer { f.close() }
        var at = 1
        var sent = 0
        // Up to what the socket queues without a reader (net.unix.max_dgram_qlen, and
        // the send buffer): a stopped NetEventLoop does not run again, so the backend
        // reads once, after everything was sent.
        while at + 2 <= data.count && sent < 256 {
            let length = min(Int(data[at]) << 8 | Int(data[at + 1]), data.count - at - 2)
            if length > 0 {
                guard send(f.peer, data.baseAddress! + at + 2, length, cnb_MSG_DONTWAIT) == length else {
                    fuzzCheck(errno == EAGAIN, "send on the fuzzing socketpair failed: \(String(cString: strerror(errno)))")
                    break
                }
                sent += 1
            }
            at += 2 + length
        }
        guard sent > 0 else { return }
        try! f.loop.run()
    }
}
