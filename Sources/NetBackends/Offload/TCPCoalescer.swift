#if canImport(Glibc)
import Glibc
#endif

/// Frames waiting in order, readable in place (a backend's output queue).
public protocol QueuedFrames {
    var waiting: Int { get }
    func frame(at index: Int) -> (bytes: UnsafeMutableRawPointer, length: Int)
    /// The frame's own virtio-net header says its checksum is to be filled in
    /// (NEEDS_CSUM) or was checked already (DATA_VALID): it is not verified again.
    func checksumTrusted(at index: Int) -> Bool
}

extension QueuedFrames {
    /// Frames without a virtio-net header are verified.
    public func checksumTrusted(at index: Int) -> Bool { false }
}

/// Software receive coalescing (what a NIC's LRO or Linux's GRO does): consecutive
/// queued TCP segments of one flow leave as one GSO super-frame, so that a receiver
/// that takes GSO frames (a tap, a virtio guest with GUEST_TSO4/6) handles one frame and
/// one system call where there were dozens.
///
/// Segments merge, as in Linux's tcp_gro_receive, only when nothing but the sequence
/// number (which must continue the run), the IP length, identification and checksums
/// differ: same addresses, ports, ACK number, window and options, flags ACK with PSH at
/// most on the last; every payload but the last exactly the first's size. Anything else
/// (SYN, FIN, RST, URG, ECN marks, pure ACKs, other protocols) ends a run and leaves alone.
///
/// Every segment's IPv4 header and TCP checksums are verified before it joins a run, as
/// GRO does: the super-frame leaves with NEEDS_CSUM, so the receiver would trust a sum
/// recomputed over corrupt bytes. A segment that fails ends the run and goes on alone,
/// untouched, for the receiver to count and drop; one whose virtio-net header says
/// NEEDS_CSUM or DATA_VALID (`QueuedFrames.checksumTrusted`) is trusted, as the kernel does.
public enum TCPCoalescer {
    /// A run of `count` >= 2 queued frames starting at the head.
    public struct Run {
        public let count: Int
        public let layout: TCPFrameLayout
        /// The first segment's payload, which every other one but the last matches.
        public let segmentSize: Int
        public let payloadLength: Int
        /// The last segment carried PSH.
        public let push: Bool
        /// The super-frame's length without a virtio-net header.
        public var frameLength: Int { layout.headerLength + payloadLength }
    }

    /// Most segments in one super-frame (bounds the iovecs a run needs).
    public static let maximumSegments = 64

    /// The run starting at queued frame `start` whose super-frame fits in `maximumLength`
    /// bytes (and in an IP length field), of a family the receiver takes (`ipv4`: TSO4,
    /// `ipv6`: TSO6); nil when that frame goes on its own.
    public static func run<Q: QueuedFrames>(in queue: Q, from start: Int = 0, maximumLength: Int,
                                            ipv4: Bool = true, ipv6: Bool = true) -> Run? {
        let waiting = queue.waiting - start
        guard waiting >= 2 else { return nil }
        let (first, firstLength) = queue.frame(at: start)
        guard let l = TCPFrameLayout(first, length: firstLength), l.isIPv6 ? ipv6 : ipv4,
              l.headerLength + l.payloadLength == firstLength, l.payloadLength > 0 else { return nil }
        guard TCPFrameLayout.flags(first, l) == TCPFrameLayout.ack,
              queue.checksumTrusted(at: start) || l.checksumsValid(first) else { return nil }
        let size = l.payloadLength
        let limit = min(maximumLength, TCPFrameLayout.ethernetLength + 65535 - (l.isIPv6 ? 40 : 0))
        var expected = TCPFrameLayout.sequence(first, l) &+ UInt32(size)
        var total = size
        var count = 1
        var push = false
        while count < waiting && count < maximumSegments {
            let (f, length) = queue.frame(at: start + count)
            guard length > l.headerLength, l.headerLength + total + (length - l.headerLength) <= limit,
                  let m = TCPFrameLayout(f, length: length), m.headerLength == l.headerLength,
                  m.tcpOffset == l.tcpOffset, m.isIPv6 == l.isIPv6,
                  m.headerLength + m.payloadLength == length,
                  m.payloadLength > 0, m.payloadLength <= size,
                  TCPFrameLayout.sequence(f, m) == expected,
                  sameFlow(first, f, l) else { break }
            let g = TCPFrameLayout.flags(f, m)
            guard g & ~TCPFrameLayout.psh == TCPFrameLayout.ack,
                  queue.checksumTrusted(at: start + count) || m.checksumsValid(f) else { break }
            count += 1
            total += m.payloadLength
            expected = expected &+ UInt32(m.payloadLength)
            if g & TCPFrameLayout.psh != 0 || m.payloadLength < size {
                push = g & TCPFrameLayout.psh != 0
                break
            }
        }
        guard count >= 2 else { return nil }
        return Run(count: count, layout: l, segmentSize: size, payloadLength: total, push: push)
    }

    /// Bytes `from..<to` of two frames are equal.
    @inline(__always)
    private static func same(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ from: Int, _ to: Int) -> Bool {
        to <= from || memcmp(a + from, b + from, to - from) == 0
    }

    /// Same Ethernet header, and IP header but for length, identification and checksum.
    @inline(__always)
    private static func sameIP(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ l: TCPFrameLayout) -> Bool {
        let ip = l.ipOffset, t = l.tcpOffset
        return l.isIPv6
            ? same(a, b, 0, ip + 4) && same(a, b, ip + 6, t)
            : same(a, b, 0, ip + 2) && same(a, b, ip + 6, ip + 10) && same(a, b, ip + 12, t)
    }

    /// One flow's segments: same IP, and TCP header but for sequence number, flags and checksum.
    @inline(__always)
    private static func sameFlow(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ l: TCPFrameLayout) -> Bool {
        let t = l.tcpOffset
        return sameIP(a, b, l) && same(a, b, t, t + 4) && same(a, b, t + 8, t + 13)
            && same(a, b, t + 14, t + 16) && same(a, b, t + 18, l.headerLength)
    }

    /// How many queued frames from `start` on are pure ACKs that the next queued frame,
    /// a pure ACK of the same connection acknowledging more, makes redundant: those can
    /// be skipped, since TCP acknowledgements are cumulative (RFC 9293, 3.4). The idea of
    /// CAKE's ack-filter (tc-cake(8)), kept to its safest case: consecutive frames only,
    /// flags exactly ACK, identical options, and an equal ACK number (a duplicate ACK,
    /// which signals loss) never replaces another.
    public static func supersededAcks<Q: QueuedFrames>(in queue: Q, from start: Int = 0) -> Int {
        var skipped = 0
        var (a, aLength) = queue.frame(at: start)
        guard let l = TCPFrameLayout(a, length: aLength), isPureAck(a, aLength, l) else { return 0 }
        while start + skipped + 1 < queue.waiting {
            let (b, bLength) = queue.frame(at: start + skipped + 1)
            guard bLength == aLength, let m = TCPFrameLayout(b, length: bLength), m.headerLength == l.headerLength,
                  m.tcpOffset == l.tcpOffset, m.isIPv6 == l.isIPv6, isPureAck(b, bLength, m),
                  sameAckStream(a, b, l) else { break }
            let ackA = UInt32(bigEndian: a.loadUnaligned(fromByteOffset: l.tcpOffset + 8, as: UInt32.self))
            let ackB = UInt32(bigEndian: b.loadUnaligned(fromByteOffset: l.tcpOffset + 8, as: UInt32.self))
            guard Int32(bitPattern: ackB &- ackA) > 0 else { break }
            skipped += 1
            (a, aLength) = (b, bLength)
        }
        return skipped
    }

    @inline(__always)
    private static func isPureAck(_ f: UnsafeRawPointer, _ length: Int, _ l: TCPFrameLayout) -> Bool {
        l.payloadLength == 0 && TCPFrameLayout.flags(f, l) == TCPFrameLayout.ack
    }

    /// Same IP, ports, sequence number, header length, flags and options; the ACK number
    /// and window may differ.
    @inline(__always)
    private static func sameAckStream(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ l: TCPFrameLayout) -> Bool {
        let t = l.tcpOffset
        return sameIP(a, b, l) && same(a, b, t, t + 8) && same(a, b, t + 12, t + 14) && same(a, b, t + 18, l.headerLength)
    }

    /// Writes the super-frame's headers (`run.layout.headerLength` bytes) for a run whose
    /// first frame is `first`: IP length for the whole payload, PSH if the last segment
    /// had it, and in the TCP checksum field the pseudo-header sum that NEEDS_CSUM asks for.
    public static func writeHeaders(_ run: Run, first: UnsafeRawPointer, into out: UnsafeMutableRawPointer) {
        let l = run.layout
        out.copyMemory(from: first, byteCount: l.headerLength)
        l.setIPLength(out, payload: run.payloadLength)
        if run.push {
            let f = out.load(fromByteOffset: l.tcpOffset + 13, as: UInt8.self) | TCPFrameLayout.psh
            out.storeBytes(of: f, toByteOffset: l.tcpOffset + 13, as: UInt8.self)
        }
        let pseudo = l.pseudoHeaderSum(out, tcpLength: l.tcpHeaderLength + run.payloadLength)
        out.storeBytes(of: UInt16(truncatingIfNeeded: pseudo).bigEndian, toByteOffset: l.tcpOffset + 16, as: UInt16.self)
    }

    /// Room `describe` needs in its scratch: a 12-byte virtio-net header and the largest
    /// Ethernet + IPv4/IPv6 + TCP headers (14 + 60 + 60).
    public static let scratchSize = 160

    /// The super-frame of `run` (queued from `start`) as iovecs, nothing copied but headers:
    /// `vectors[0]` is the virtio-net header (`headerLength` bytes, 0 for none) followed by
    /// the merged headers, both built in `scratch` (`scratchSize` bytes); then each
    /// segment's payload where it lies. Returns how many iovecs (1 + `run.count`).
    public static func describe<Q: QueuedFrames>(_ run: Run, in queue: Q, from start: Int = 0, headerLength: Int,
                                                 scratch: UnsafeMutableRawPointer,
                                                 into vectors: UnsafeMutablePointer<iovec>) -> Int {
        let h = run.layout.headerLength
        if headerLength > 0 {
            virtioHeader(run).encode(into: UnsafeMutableRawBufferPointer(start: scratch, count: headerLength))
        }
        writeHeaders(run, first: queue.frame(at: start).bytes, into: scratch + headerLength)
        vectors[0] = iovec(iov_base: scratch, iov_len: headerLength + h)
        for i in 0..<run.count {
            let f = queue.frame(at: start + i)
            vectors[1 + i] = iovec(iov_base: f.bytes + h, iov_len: f.length - h)
        }
        return 1 + run.count
    }

    /// The virtio-net header that goes with the super-frame (virtio 1.2, 5.1.6.4.1).
    public static func virtioHeader(_ run: Run) -> VirtioNetHeader {
        let l = run.layout
        return VirtioNetHeader(flags: .needsCsum, gsoType: l.isIPv6 ? .tcpv6 : .tcpv4,
                               headerLength: UInt16(l.headerLength), gsoSize: UInt16(run.segmentSize),
                               csumStart: UInt16(l.tcpOffset), csumOffset: 16, numBuffers: 1)
    }
}
