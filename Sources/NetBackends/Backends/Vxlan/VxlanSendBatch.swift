#if canImport(Glibc)
import Glibc
#endif

/// Datagrams to one peer queued end to end in one buffer, each already a VXLAN header and
/// its inner frame, and handed to the kernel in chunks: one sendmsg with UDP_SEGMENT (UDP
/// GSO, udp(7)) per run of up to 64 equal-sized datagrams (the last of a run may be
/// shorter). The segments of a TSO frame are cut straight in here, so a 64 KiB frame
/// takes one or two system calls; frames cut elsewhere join as they come.
final class VxlanSendBatch {
    /// One sendmsg's payload: a UDP datagram over IPv4 holds at most 65507 bytes.
    static let sendLimit = 65000
    /// The kernel's UDP_MAX_SEGMENTS is 64 on older kernels (128 since 6.x).
    static let maximumSegments = 64
    static let solUDP: Int32 = 17       // SOL_UDP (IPPROTO_UDP)
    static let udpSegment: Int32 = 103  // UDP_SEGMENT (linux/udp.h)
    /// Room for the worst TSO frame cut here: 64 KiB of payload at the smallest gso_size,
    /// each segment with its own VXLAN, Ethernet, IP and TCP headers (60 + 60 at most),
    /// plus the same again queued before it.
    static let capacity = 2 * 65536 + TCPSegmenter.maximumSegments * (VxlanHeader.length + 14 + 60 + 60)
    static let maximumDatagrams = 2 * TCPSegmenter.maximumSegments

    let buffer = UnsafeMutableRawPointer.allocate(byteCount: VxlanSendBatch.capacity, alignment: 64)
    private let lengths = UnsafeMutablePointer<Int32>.allocate(capacity: VxlanSendBatch.maximumDatagrams)
    /// One cmsghdr (16 bytes on LP64) + a u16, padded: CMSG_SPACE(2) = 24.
    let control = UnsafeMutableRawPointer.allocate(byteCount: 24, alignment: 8)
    /// Datagrams queued, and bytes; the first `sent` of them (`sentBytes`) already left.
    private(set) var count = 0
    private(set) var used = 0
    private(set) var sent = 0
    private(set) var sentBytes = 0
    private(set) var peer = -1
    /// The largest datagram UDP GSO may carry (the path MTU less the outer IP and UDP
    /// headers); a larger one leaves alone and the kernel fragments it.
    let largestSegment: Int
    /// False once the kernel refused UDP_SEGMENT: every datagram then leaves alone.
    var segmentOffload = true

    init(largestSegment: Int) {
        self.largestSegment = largestSegment
    }

    deinit {
        buffer.deallocate()
        lengths.deallocate()
        control.deallocate()
    }

    var isEmpty: Bool { sent == count }

    /// Whether `datagrams` more datagrams of `bytes` bytes in all, to `peer`, fit now.
    func hasRoom(datagrams: Int, bytes: Int, peer: Int) -> Bool {
        (isEmpty || peer == self.peer) && count + datagrams <= Self.maximumDatagrams && used + bytes <= Self.capacity
    }

    /// Where the next datagram is written.
    var end: UnsafeMutableRawPointer { buffer + used }

    /// Records a datagram of `length` bytes written at `end`, to `peer`.
    func commit(_ length: Int, peer: Int) {
        if isEmpty { self.peer = peer }
        lengths[count] = Int32(length)
        used += length
        count += 1
    }

    /// The next run to send: its start, its datagram count and bytes, and the segment size
    /// (0: one datagram alone, no UDP_SEGMENT). `complete` is false when more datagrams of
    /// the same size could still join it.
    func nextRun() -> (at: UnsafeMutableRawPointer, datagrams: Int, bytes: Int, segment: Int, complete: Bool)? {
        guard sent < count else { return nil }
        let size = Int(lengths[sent])
        if size > largestSegment || !segmentOffload {
            return (buffer + sentBytes, 1, size, 0, true)
        }
        var n = 1, bytes = size
        while sent + n < count && n < Self.maximumSegments {
            let next = Int(lengths[sent + n])
            guard next <= size, bytes + next <= Self.sendLimit else { break }
            n += 1
            bytes += next
            if next < size { return (buffer + sentBytes, n, bytes, size, true) }   // only the last may be short
        }
        return (buffer + sentBytes, n, bytes, n > 1 ? size : 0, n == Self.maximumSegments || sent + n < count)
    }

    /// The run `nextRun` gave left.
    func sentRun(datagrams: Int, bytes: Int) {
        sent += datagrams
        sentBytes += bytes
        if sent == count { reset() }
    }

    func reset() {
        used = 0
        count = 0
        sent = 0
        sentBytes = 0
        peer = -1
    }

    /// Fills `message`'s control part with UDP_SEGMENT = `segment`, or none for 0.
    func setControl(_ message: inout msghdr, segment: Int) {
        guard segment > 0 else {
            message.msg_control = nil
            message.msg_controllen = 0
            return
        }
        let header = control.assumingMemoryBound(to: cmsghdr.self)
        header.pointee.cmsg_len = 16 + 2
        header.pointee.cmsg_level = Self.solUDP
        header.pointee.cmsg_type = Self.udpSegment
        (control + 16).storeBytes(of: UInt16(segment), as: UInt16.self)
        message.msg_control = control
        message.msg_controllen = 24
    }
}
