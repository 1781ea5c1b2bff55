#if canImport(Glibc)
import Glibc
#endif

/// UDP GRO on receive (`UDP_GRO`, udp(7)): the kernel may hand one read several
/// consecutive datagrams of one flow, laid end to end, each `segmentSize` bytes but the
/// last, and says so in a `UDP_GRO` control message. One read lands here, and `next`
/// serves the datagrams (each a VXLAN header and its inner frame) one by one.
final class VxlanReceiveBuffer {
    static let udpGRO: Int32 = 104   // UDP_GRO (linux/udp.h)
    static let capacity = 65536 + 64

    let bytes = UnsafeMutableRawPointer.allocate(byteCount: VxlanReceiveBuffer.capacity, alignment: 16)
    /// One cmsghdr (16 bytes) + an int, padded: CMSG_SPACE(4) = 24; room for one more.
    let control = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 8)
    let vector = UnsafeMutablePointer<iovec>.allocate(capacity: 1)
    private(set) var filled = 0
    private var offset = 0
    private var segmentSize = 0

    init() {
        vector.pointee = iovec(iov_base: bytes, iov_len: Self.capacity)
    }

    deinit {
        bytes.deallocate()
        control.deallocate()
        vector.deallocate()
    }

    var isEmpty: Bool { offset >= filled }

    /// Sets up `message` for one read into the buffer.
    func prepare(_ message: inout msghdr) {
        message.msg_iov = vector
        message.msg_iovlen = 1
        message.msg_control = control
        message.msg_controllen = 64
    }

    /// Records a read of `length` bytes and its segment size from the control messages.
    func filled(_ length: Int, _ message: msghdr) {
        filled = length
        offset = 0
        segmentSize = length
        var at = 0
        let total = Int(message.msg_controllen)
        while at + 16 <= total {
            let h = (control + at).load(as: cmsghdr.self)
            let len = Int(h.cmsg_len)
            guard len >= 16 else { break }
            if h.cmsg_level == VxlanSendBatch.solUDP && h.cmsg_type == Self.udpGRO && len >= 20 {
                let size = Int((control + at + 16).loadUnaligned(as: Int32.self))
                if size > 0 { segmentSize = size }
            }
            at += (len + 7) & ~7
        }
    }

    /// The next datagram of the read; nil when all were served.
    func next() -> (UnsafeRawPointer, Int)? {
        guard offset < filled else { return nil }
        let size = min(segmentSize, filled - offset)
        defer { offset += size }
        return (UnsafeRawPointer(bytes + offset), size)
    }

    /// The size of the datagram `next` would return, 0 when all were served.
    var nextSize: Int { offset < filled ? min(segmentSize, filled - offset) : 0 }

    func reset() {
        filled = 0
        offset = 0
    }
}
