/// Software TCP segmentation (what a NIC's TSO does): cuts a TCP GSO super-frame, as a
/// tap with TSO or a virtio guest hands it over (virtio 1.2, 5.1.6.2: `gso_size` payload
/// bytes per segment), into wire-sized frames with complete checksums, for a receiver
/// that takes only those (libslirp). Each segment is built in the caller's buffer;
/// nothing is allocated.
///
/// Per segment, as Linux's tcp_gso_segment does: the headers are copied, the sequence
/// number advances by the payload already sent, the IPv4 identification by one; FIN and
/// PSH stay on the last segment only, CWR on the first only.
public struct TCPSegmenter {
    private let frame: UnsafeRawPointer
    private let layout: TCPFrameLayout
    private let segmentSize: Int
    private var sent = 0
    private var index = 0
    private let firstSequence: UInt32
    private let firstID: UInt16

    /// The smallest `gso_size` accepted. No TCP sender uses a smaller MSS (Linux refuses
    /// below net.ipv4.tcp_min_snd_mss, 48 by default: ip-sysctl.rst); a smaller one would
    /// only make one frame thousands of segments of work.
    public static let minimumSegmentSize = 48
    /// The most segments one frame can make: a 64 KiB IP packet at the smallest size.
    public static let maximumSegments = (65535 + minimumSegmentSize - 1) / minimumSegmentSize

    /// `frame`: the super-frame without its virtio-net header; `gsoSize`: the header's
    /// `gso_size`. Nil (the frame is malformed) when it is not TCP over plain IPv4/IPv6, or
    /// `gsoSize` is below `minimumSegmentSize` (0 included) or is 0xffff, the kernel's
    /// GSO_BY_FRAGS, which virtio_net_hdr_to_skb (include/linux/virtio_net.h) refuses.
    public init?(frame: UnsafeRawPointer, length: Int, gsoSize: Int) {
        guard gsoSize >= Self.minimumSegmentSize, gsoSize < 0xffff,
              let l = TCPFrameLayout(superFrame: frame, length: length) else { return nil }
        self.frame = frame
        layout = l
        segmentSize = gsoSize
        firstSequence = TCPFrameLayout.sequence(frame, l)
        firstID = l.isIPv6 ? 0 : UInt16(bigEndian: frame.loadUnaligned(fromByteOffset: l.ipOffset + 4, as: UInt16.self))
    }

    public var isIPv6: Bool { layout.isIPv6 }

    /// The longest segment `next` writes: headers plus `gso_size`.
    public var maximumSegmentLength: Int { layout.headerLength + segmentSize }

    /// Every segment was written.
    public var isFinished: Bool { sent >= layout.payloadLength && (index > 0 || layout.payloadLength > 0) }

    /// Segments this super-frame makes.
    public var count: Int { max(1, (layout.payloadLength + segmentSize - 1) / segmentSize) }

    /// Writes the next segment into `out` (room for `maximumSegmentLength` bytes) and
    /// returns its length; nil when every segment was written.
    public mutating func next(into out: UnsafeMutableRawPointer) -> Int? {
        let total = layout.payloadLength
        guard sent < total || (index == 0 && total == 0) else { return nil }
        let n = min(segmentSize, total - sent)
        let last = sent + n >= total
        let h = layout.headerLength
        out.copyMemory(from: frame, byteCount: h)
        (out + h).copyMemory(from: frame + h + sent, byteCount: n)
        layout.setIPLength(out, payload: n, ipv4ID: layout.isIPv6 ? nil : firstID &+ UInt16(truncatingIfNeeded: index))
        let t = layout.tcpOffset
        out.storeBytes(of: (firstSequence &+ UInt32(truncatingIfNeeded: sent)).bigEndian, toByteOffset: t + 4, as: UInt32.self)
        var flags = out.load(fromByteOffset: t + 13, as: UInt8.self)
        if !last { flags &= ~(TCPFrameLayout.fin | TCPFrameLayout.psh) }
        if index > 0 { flags &= ~TCPFrameLayout.cwr }
        out.storeBytes(of: flags, toByteOffset: t + 13, as: UInt8.self)
        let tcpLength = layout.tcpHeaderLength + n
        out.storeBytes(of: UInt16(0), toByteOffset: t + 16, as: UInt16.self)
        let s = InternetChecksum.sum(out + t, tcpLength, initial: layout.pseudoHeaderSum(out, tcpLength: tcpLength))
        out.storeBytes(of: (~UInt16(truncatingIfNeeded: s)).bigEndian, toByteOffset: t + 16, as: UInt16.self)
        sent += n
        index += 1
        return h + n
    }
}
