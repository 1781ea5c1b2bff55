/// Fuzzing entry point (Fuzz/, `@_spi(Fuzzing)`): a virtio-net header as a guest or a
/// peer could write it goes through what reads one: `VirtioNetHeader(decoding:)` and
/// `encode` (which must give the same bytes back), the hot-path `rawIsGSO`, the 10/12/0
/// byte conversion `convert`, and the partial-checksum completion its `csum_start` and
/// `csum_offset` drive (`InternetChecksum.completeIfNeeded`) over the frame behind it.
/// Input: a 12-byte header, then the frame.
@_spi(Fuzzing) public enum VirtioNetFuzzing {
    public static func run(_ data: UnsafeRawBufferPointer) {
        guard data.count >= VirtioNetHeader.mergeableLength else { return }
        let raw = UnsafeRawBufferPointer(rebasing: data[0..<VirtioNetHeader.mergeableLength])
        for length in [VirtioNetHeader.baseLength, VirtioNetHeader.mergeableLength] {
            let form = UnsafeRawBufferPointer(rebasing: raw[0..<length])
            let decoded = VirtioNetHeader(decoding: form)
            if let decoded {
                fuzzCheck(decoded.isGSO == VirtioNetHeader.rawIsGSO(raw.baseAddress!), "rawIsGSO disagrees with the decoded header")
                var again = [UInt8](repeating: 0, count: length)
                again.withUnsafeMutableBytes { decoded.encode(into: $0) }
                fuzzCheck(again.elementsEqual(form), "header \(Array(form)) encodes back as \(again)")
            } else {
                fuzzCheck(VirtioNetHeader.rawIsGSO(raw.baseAddress!), "an undecodable header must be an unknown GSO type")
            }
            for toLength in [VirtioNetHeader.baseLength, VirtioNetHeader.mergeableLength] {
                let out = UnsafeMutableRawPointer.allocate(byteCount: toLength, alignment: 1)
                defer { out.deallocate() }
                VirtioNetHeader.convert(from: raw.baseAddress!, fromLength: length, to: out, toLength: toLength)
                let converted = UnsafeRawBufferPointer(start: out, count: toLength)
                fuzzCheck(converted[0] == raw[0] & ~VirtioNetHeader.Flags.dataValid.rawValue, "DATA_VALID must be cleared")
                fuzzCheck(converted[1..<10].elementsEqual(raw[1..<10]), "convert changed a field")
                if toLength == VirtioNetHeader.mergeableLength {
                    fuzzCheck(converted[10] == 1 && converted[11] == 0, "num_buffers must be 1")
                }
            }
        }
        // The frame in a buffer of exactly its size, so that a checksum outside it shows (ASan).
        let length = data.count - VirtioNetHeader.mergeableLength
        let frame = UnsafeMutableRawPointer.allocate(byteCount: max(length, 1), alignment: 1)
        defer { frame.deallocate() }
        frame.copyMemory(from: data.baseAddress! + VirtioNetHeader.mergeableLength, byteCount: length)
        InternetChecksum.completeIfNeeded(header: raw.baseAddress!, frame: frame, length: length)
    }
}
