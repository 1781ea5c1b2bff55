#if canImport(Glibc)
import Glibc
#endif

/// Consecutive datagrams to one peer gathered into one buffer and handed to the kernel in
/// one sendmsg with UDP_SEGMENT (UDP GSO, udp(7)): the kernel cuts the buffer into
/// datagrams of `segmentSize` bytes (the last may be shorter), each already holding its
/// own VXLAN header and inner Ethernet/IP/TCP headers. Cut TSO frames arrive from the relay
/// one after another at the same size, so one system call carries up to 64 of them.
final class VxlanSendBatch {
    /// A UDP datagram's payload limit over IPv4 is 65507 bytes; stay under it.
    static let capacity = 65000
    /// The kernel's UDP_MAX_SEGMENTS is 64 on older kernels (128 since 6.x).
    static let maximumSegments = 64
    static let solUDP: Int32 = 17       // SOL_UDP (IPPROTO_UDP)
    static let udpSegment: Int32 = 103  // UDP_SEGMENT (linux/udp.h)

    let buffer = UnsafeMutableRawPointer.allocate(byteCount: VxlanSendBatch.capacity, alignment: 16)
    /// One cmsghdr (16 bytes on LP64) + a u16, padded: CMSG_SPACE(2) = 24.
    let control = UnsafeMutableRawPointer.allocate(byteCount: 24, alignment: 8)
    private(set) var used = 0
    private(set) var count = 0
    private(set) var segmentSize = 0
    private(set) var peer = -1
    /// A datagram shorter than `segmentSize` ends a batch (only the last may be short).
    private var endsShort = false
    /// The largest datagram one segment may be (the path MTU less the outer IP and UDP headers).
    let largestSegment: Int

    init(largestSegment: Int) {
        self.largestSegment = largestSegment
    }

    deinit {
        buffer.deallocate()
        control.deallocate()
    }

    var isEmpty: Bool { count == 0 }

    /// Whether a datagram of `length` bytes to `peer` may join what is gathered.
    func accepts(_ length: Int, peer: Int) -> Bool {
        guard length <= largestSegment else { return false }
        guard count > 0 else { return true }
        return peer == self.peer && !endsShort && length <= segmentSize && count < Self.maximumSegments
            && used + length <= Self.capacity
    }

    /// Appends the VXLAN header and the frame (copied from its iovecs).
    func append(header: UnsafePointer<UInt8>, frame: UnsafeBufferPointer<iovec>, length: Int, peer: Int) {
        if count == 0 {
            segmentSize = length
            self.peer = peer
        } else if length < segmentSize {
            endsShort = true
        }
        (buffer + used).copyMemory(from: header, byteCount: VxlanHeader.length)
        var at = used + VxlanHeader.length
        for v in frame {
            guard let base = v.iov_base, v.iov_len > 0 else { continue }
            (buffer + at).copyMemory(from: base, byteCount: v.iov_len)
            at += v.iov_len
        }
        used = at
        count += 1
    }

    func reset() {
        used = 0
        count = 0
        segmentSize = 0
        peer = -1
        endsShort = false
    }

    /// Fills `message`'s control part with UDP_SEGMENT = segmentSize (only when the batch
    /// holds more than one datagram; one goes as a plain datagram).
    func setControl(_ message: inout msghdr) {
        guard count > 1 else {
            message.msg_control = nil
            message.msg_controllen = 0
            return
        }
        let header = control.assumingMemoryBound(to: cmsghdr.self)
        header.pointee.cmsg_len = 16 + 2
        header.pointee.cmsg_level = Self.solUDP
        header.pointee.cmsg_type = Self.udpSegment
        (control + 16).storeBytes(of: UInt16(segmentSize), as: UInt16.self)
        message.msg_control = control
        message.msg_controllen = 24
    }
}
