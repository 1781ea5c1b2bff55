#if canImport(Glibc)
import Glibc
#endif

/// Frames from the frontend that carry a virtio-net header, on their way into libslirp,
/// which takes only wire frames with complete checksums (its tcp_input and udp_input
/// verify them): a partial checksum (NEEDS_CSUM) is finished in software and a TCP GSO
/// super-frame is cut into segments (`TCPSegmenter`), each handed to libslirp in turn.
extension SlirpStack {
    /// What became of a frame.
    enum InputResult {
        case passed
        /// A super-frame, handed over as this many segments.
        case segmented(Int)
        case dropped(DropReason)
    }

    /// `frame`: the Ethernet frame, contiguous; `header`: its virtio-net header (10 or 12
    /// bytes) or nil. Uses the stack's scratch buffer, so `frame` may not point into it.
    func input(frame: UnsafeRawPointer, length: Int, header: UnsafeRawPointer?) -> InputResult {
        guard length >= TCPFrameLayout.ethernetLength else { return .dropped(.truncated) }
        guard let header else {
            input(frame, length: length)
            return .passed
        }
        let flags = header.load(as: UInt8.self)
        let gso = header.load(fromByteOffset: 1, as: UInt8.self) & ~VirtioNetHeader.gsoECN
        if gso == VirtioNetHeader.GSOType.none.rawValue {
            guard flags & VirtioNetHeader.Flags.needsCsum.rawValue != 0 else {
                input(frame, length: length)
                return .passed
            }
            guard length <= scratchSize else { return .dropped(.malformed) }
            scratch.copyMemory(from: frame, byteCount: length)
            InternetChecksum.completeIfNeeded(header: header, frame: scratch, length: length)
            input(scratch, length: length)
            return .passed
        }
        guard gso == VirtioNetHeader.GSOType.tcpv4.rawValue || gso == VirtioNetHeader.GSOType.tcpv6.rawValue else {
            return .dropped(.offloadUnsupported)
        }
        let gsoSize = Int(UInt16(littleEndian: header.loadUnaligned(fromByteOffset: 4, as: UInt16.self)))
        guard var segmenter = TCPSegmenter(frame: frame, length: length, gsoSize: gsoSize),
              segmenter.isIPv6 == (gso == VirtioNetHeader.GSOType.tcpv6.rawValue),
              segmenter.maximumSegmentLength <= scratchSize else { return .dropped(.malformed) }
        var segments = 0
        while let n = segmenter.next(into: scratch) {
            input(scratch, length: n)
            segments += 1
        }
        return .segmented(segments)
    }
}
