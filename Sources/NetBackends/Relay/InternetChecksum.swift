/// The Internet checksum (RFC 1071), used to finish a NEEDS_CSUM frame in software when
/// it goes to a side that has no virtio-net header to carry the request.
enum InternetChecksum {
    /// Folds the one's-complement sum of `length` bytes at `p` into `initial`.
    static func sum(_ p: UnsafeRawPointer, _ length: Int, initial: UInt32 = 0) -> UInt32 {
        var acc = UInt64(initial)
        var i = 0
        while i + 1 < length {
            acc &+= UInt64(UInt16(p.load(fromByteOffset: i, as: UInt8.self)) << 8 | UInt16(p.load(fromByteOffset: i + 1, as: UInt8.self)))
            i += 2
        }
        if i < length { acc &+= UInt64(p.load(fromByteOffset: i, as: UInt8.self)) << 8 }
        while acc >> 16 != 0 { acc = (acc & 0xffff) &+ (acc >> 16) }
        return UInt32(acc)
    }

    /// If the header asks for NEEDS_CSUM, writes the checksum the offload would have:
    /// sum from csum_start to the end (the pseudo-header sum is already in place),
    /// stored at csum_start + csum_offset.
    static func completeIfNeeded(header: UnsafeRawPointer, frame: UnsafeMutableRawPointer, length: Int) {
        guard header.load(as: UInt8.self) & VirtioNetHeader.Flags.needsCsum.rawValue != 0 else { return }
        let start = Int(UInt16(littleEndian: header.loadUnaligned(fromByteOffset: 6, as: UInt16.self)))
        let offset = Int(UInt16(littleEndian: header.loadUnaligned(fromByteOffset: 8, as: UInt16.self)))
        guard start + offset + 2 <= length else { return }
        let s = sum(frame + start, length - start)
        let c = ~UInt16(truncatingIfNeeded: s)
        frame.storeBytes(of: c.bigEndian, toByteOffset: start + offset, as: UInt16.self)
    }
}
