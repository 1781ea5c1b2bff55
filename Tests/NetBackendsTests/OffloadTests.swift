import Foundation
import NetBackends
import Testing

/// Software offloads against their definitions: the Internet checksum (RFC 1071) against
/// a plain 16-bit reference; TCP segmentation (what TSO does) and coalescing (what GRO
/// does) against frames built here field by field, checked with valid checksums, sequence
/// numbers and flags, and as a round trip (coalesce a flow, cut it again, get the wire back).
@Suite struct OffloadTests {
    // MARK: frames

    /// An Ethernet + IPv4/IPv6 + TCP frame with valid checksums.
    static func segment(ipv6: Bool = false, seq: UInt32, ack: UInt32 = 0x0102_0304, flags: UInt8 = TCPFrameLayout.ack,
                        payload: [UInt8], id: UInt16 = 7, window: UInt16 = 0xfaf0, options: [UInt8] = [],
                        sourcePort: UInt16 = 40000) -> [UInt8] {
        var f: [UInt8] = [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2] + (ipv6 ? [0x86, 0xdd] : [0x08, 0x00])
        let tcpLength = 20 + options.count + payload.count
        func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
        func be32(_ v: UInt32) -> [UInt8] { be16(UInt16(v >> 16)) + be16(UInt16(v & 0xffff)) }
        if ipv6 {
            f += [0x60, 0, 0, 0] + be16(UInt16(tcpLength)) + [6, 64]
            f += [0xfd, 0] + [UInt8](repeating: 0, count: 13) + [2]
            f += [0xfd, 0] + [UInt8](repeating: 0, count: 13) + [0x64]
        } else {
            f += [0x45, 0] + be16(UInt16(20 + tcpLength)) + be16(id) + [0x40, 0, 64, 6, 0, 0]
            f += [10, 0, 2, 2, 10, 0, 2, 100]
        }
        let t = f.count
        f += be16(sourcePort) + be16(5201) + be32(seq) + be32(ack)
        f += [UInt8((20 + options.count) / 4) << 4, flags] + be16(window) + [0, 0, 0, 0] + options + payload
        f.withUnsafeMutableBytes { b in
            let p = b.baseAddress!
            if !ipv6 {
                let c = ~UInt16(truncatingIfNeeded: InternetChecksum.sum(p + 14, 20))
                p.storeBytes(of: c.bigEndian, toByteOffset: 24, as: UInt16.self)
            }
            let pseudo = InternetChecksum.pseudoHeaderSum(addresses: p + (ipv6 ? 22 : 26), addressLength: ipv6 ? 16 : 4,
                                                          protocol: 6, length: tcpLength)
            let c = ~UInt16(truncatingIfNeeded: InternetChecksum.sum(p + t, tcpLength, initial: pseudo))
            p.storeBytes(of: c.bigEndian, toByteOffset: t + 16, as: UInt16.self)
        }
        return f
    }

    /// Frames in arrays, as a backend's queue would hold them.
    final class ArrayQueue: QueuedFrames {
        var frames: [UnsafeMutableRawBufferPointer] = []
        init(_ list: [[UInt8]]) {
            for l in list {
                let b = UnsafeMutableRawBufferPointer.allocate(byteCount: l.count, alignment: 8)
                b.copyBytes(from: l)
                frames.append(b)
            }
        }
        deinit { frames.forEach { $0.deallocate() } }
        var waiting: Int { frames.count }
        func frame(at index: Int) -> (bytes: UnsafeMutableRawPointer, length: Int) { (frames[index].baseAddress!, frames[index].count) }
    }

    static func payload(_ n: Int, seed: UInt8) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31) &+ seed } }

    /// Verifies the IPv4 header checksum (when IPv4) and the TCP checksum of a wire frame.
    static func checksumsValid(_ f: [UInt8]) -> Bool {
        f.withUnsafeBytes { b in
            let p = b.baseAddress!
            guard let l = TCPFrameLayout(p, length: f.count) else { return false }
            if !l.isIPv6 && InternetChecksum.sum(p + 14, l.tcpOffset - 14) != 0xffff { return false }
            let tcpLength = f.count - l.tcpOffset
            return InternetChecksum.sum(p + l.tcpOffset, tcpLength, initial: l.pseudoHeaderSum(p, tcpLength: tcpLength)) == 0xffff
        }
    }

    /// A super-frame (no virtio-net header) cut by `TCPSegmenter`; empty when it refuses.
    static func cut(_ superFrame: [UInt8], gsoSize: Int) -> [[UInt8]] {
        superFrame.withUnsafeBytes { b in
            guard var s = TCPSegmenter(frame: b.baseAddress!, length: b.count, gsoSize: gsoSize) else { return [] }
            let out = UnsafeMutableRawPointer.allocate(byteCount: s.maximumSegmentLength, alignment: 8)
            defer { out.deallocate() }
            var segments: [[UInt8]] = []
            while let n = s.next(into: out) { segments.append(Array(UnsafeRawBufferPointer(start: out, count: n))) }
            return segments
        }
    }

    static func field32(_ f: [UInt8], _ at: Int) -> UInt32 { f[at..<at + 4].reduce(0) { $0 << 8 | UInt32($1) } }
    static func field16(_ f: [UInt8], _ at: Int) -> UInt16 { UInt16(f[at]) << 8 | UInt16(f[at + 1]) }

    // MARK: checksum

    @Test func checksumMatchesSixteenBitReference() {
        var g = SystemRandomNumberGenerator()
        for length in Array(0..<40) + [63, 64, 65, 1499, 1500, 9001] {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &g) }
            let initial = UInt32.random(in: 0...0xffff, using: &g)
            var reference = UInt64(initial)
            var i = 0
            while i < length {
                reference += UInt64(bytes[i]) << 8 | UInt64(i + 1 < length ? bytes[i + 1] : 0)
                i += 2
            }
            while reference >> 16 != 0 { reference = (reference & 0xffff) + (reference >> 16) }
            let fast = bytes.withUnsafeBytes { InternetChecksum.sum($0.baseAddress ?? UnsafeRawPointer(bitPattern: 8)!, length, initial: initial) }
            #expect(fast == UInt32(reference), "length \(length)")
        }
        // Every carry at once: all-ones words, long enough to wrap the accumulator's halves.
        let ones = [UInt8](repeating: 0xff, count: 65_534)
        #expect(ones.withUnsafeBytes { InternetChecksum.sum($0.baseAddress!, $0.count, initial: 0xffff) } == 0xffff)
    }

    @Test func builtFramesHaveValidChecksums() {
        #expect(Self.checksumsValid(Self.segment(seq: 1, payload: Self.payload(100, seed: 1))))
        #expect(Self.checksumsValid(Self.segment(ipv6: true, seq: 1, payload: Self.payload(101, seed: 1))))
        var broken = Self.segment(seq: 1, payload: Self.payload(100, seed: 1))
        broken[60] ^= 0x40
        #expect(!Self.checksumsValid(broken), "a flipped payload bit must break the TCP checksum")
    }

    // MARK: segmentation

    @Test(arguments: [false, true]) func segmenterCutsSuperFrameLikeTSO(ipv6: Bool) throws {
        let mss = 1448
        let data = Self.payload(10_000, seed: 3)
        let options: [UInt8] = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]   // NOP NOP timestamps
        let flags = TCPFrameLayout.ack | TCPFrameLayout.psh | TCPFrameLayout.fin | TCPFrameLayout.cwr
        let superFrame = Self.segment(ipv6: ipv6, seq: 0xffff_f000, flags: flags, payload: data, id: 0xfffe, options: options)
        let count = superFrame.withUnsafeBytes { TCPSegmenter(frame: $0.baseAddress!, length: $0.count, gsoSize: mss)?.count }
        #expect(count == 7)
        let segments = Self.cut(superFrame, gsoSize: mss)
        try #require(segments.count == 7)
        let header = ipv6 ? 14 + 40 + 32 : 14 + 20 + 32
        let t = ipv6 ? 54 : 34
        var rebuilt: [UInt8] = []
        for (i, s) in segments.enumerated() {
            let last = i == segments.count - 1
            #expect(s.count == header + (last ? data.count - 6 * mss : mss))
            #expect(Self.checksumsValid(s), "segment \(i) checksums")
            #expect(Self.field32(s, t + 4) == 0xffff_f000 &+ UInt32(i * mss), "segment \(i) sequence")
            if !ipv6 { #expect(Self.field16(s, 18) == 0xfffe &+ UInt16(i), "segment \(i) IPv4 id") }
            let f = s[t + 13]
            #expect(f & (TCPFrameLayout.psh | TCPFrameLayout.fin) == (last ? TCPFrameLayout.psh | TCPFrameLayout.fin : 0))
            #expect(f & TCPFrameLayout.cwr == (i == 0 ? TCPFrameLayout.cwr : 0))
            #expect(Array(s[t + 20..<t + 32]) == options)
            rebuilt += s[header...]
        }
        #expect(rebuilt == data)
    }

    @Test func layoutRejectsFramesShorterThanTheirHeaders() {
        // A TCP data offset of 15 words (60 bytes) in a frame that ends after 20.
        var f = Self.segment(seq: 1, payload: [])
        f[46] = 0xf0
        f.withUnsafeBytes { #expect(TCPFrameLayout($0.baseAddress!, length: $0.count) == nil) }
        f.withUnsafeBytes { #expect(TCPSegmenter(frame: $0.baseAddress!, length: $0.count, gsoSize: 1448) == nil) }
        // Every cut of a valid frame shorter than its headers is refused, not read past.
        let g = Self.segment(seq: 1, payload: Self.payload(10, seed: 1), options: [1, 1, 1, 1])
        for n in 0..<58 {
            g.withUnsafeBytes { #expect(TCPFrameLayout($0.baseAddress!, length: n) == nil, "length \(n)") }
        }
    }

    @Test func segmenterRejectsWhatIsNotTCP() {
        var udp = Self.segment(seq: 1, payload: Self.payload(3000, seed: 1))
        udp[23] = 17
        udp.withUnsafeBytes { #expect(TCPSegmenter(frame: $0.baseAddress!, length: $0.count, gsoSize: 1448) == nil) }
        let tcp = Self.segment(seq: 1, payload: Self.payload(3000, seed: 1))
        tcp.withUnsafeBytes { #expect(TCPSegmenter(frame: $0.baseAddress!, length: $0.count, gsoSize: 0) == nil) }
    }

    /// Bounded work per frame: a `gso_size` below what any TCP sender may use (Linux's
    /// tcp_min_snd_mss, 48) would make a 64 KiB frame thousands of segments, and 0xffff is
    /// the kernel's GSO_BY_FRAGS, which virtio_net_hdr_to_skb refuses: both are malformed.
    @Test func segmenterRefusesSegmentSizesNoSenderUses() {
        let tcp = Self.segment(seq: 1, payload: Self.payload(60_000, seed: 1))
        tcp.withUnsafeBytes { b in
            for size in [1, 8, 47, 0xffff] {
                #expect(TCPSegmenter(frame: b.baseAddress!, length: b.count, gsoSize: size) == nil, "gso_size \(size)")
            }
            let s = TCPSegmenter(frame: b.baseAddress!, length: b.count, gsoSize: TCPSegmenter.minimumSegmentSize)
            #expect(s != nil)
            #expect((s?.count ?? 0) <= TCPSegmenter.maximumSegments)
        }
    }

    // MARK: coalescing

    /// A flow as a sender emits it: full segments, the last one short with PSH.
    static func flow(ipv6: Bool, count: Int, mss: Int, lastLength: Int) -> [[UInt8]] {
        (0..<count).map { i in
            let last = i == count - 1
            return segment(ipv6: ipv6, seq: 1000 + UInt32(i * mss), flags: TCPFrameLayout.ack | (last ? TCPFrameLayout.psh : 0),
                           payload: payload(last ? lastLength : mss, seed: UInt8(i)), id: 100 + UInt16(i))
        }
    }

    @Test(arguments: [false, true]) func coalescedRunCutsBackToTheSameWire(ipv6: Bool) throws {
        let wire = Self.flow(ipv6: ipv6, count: 9, mss: 1460, lastLength: 500)
        let queue = ArrayQueue(wire)
        let run = try #require(TCPCoalescer.run(in: queue, maximumLength: maximumFrameLength))
        #expect(run.count == 9)
        #expect(run.segmentSize == 1460)
        #expect(run.payloadLength == 8 * 1460 + 500)
        #expect(run.push)
        // The super-frame as the backends send it: `describe`'s iovecs, gathered.
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: TCPCoalescer.scratchSize, alignment: 8)
        let vectors = UnsafeMutablePointer<iovec>.allocate(capacity: 1 + TCPCoalescer.maximumSegments)
        defer { scratch.deallocate(); vectors.deallocate() }
        let n = TCPCoalescer.describe(run, in: queue, headerLength: 12, scratch: scratch, into: vectors)
        #expect(n == 1 + run.count)
        var described: [UInt8] = []
        for i in 0..<n { described += UnsafeRawBufferPointer(start: vectors[i].iov_base, count: vectors[i].iov_len) }
        let raw = Array(described[0..<12])
        let header = try #require(raw.withUnsafeBytes { VirtioNetHeader(decoding: $0) })
        #expect(header == TCPCoalescer.virtioHeader(run))
        #expect(header.gsoType == (ipv6 ? .tcpv6 : .tcpv4))
        #expect(header.flags == [.needsCsum])
        #expect(Int(header.gsoSize) == 1460 && Int(header.headerLength) == run.layout.headerLength)
        #expect(Int(header.csumStart) == run.layout.tcpOffset && header.csumOffset == 16)
        let superFrame = Array(described[12...])
        #expect(superFrame.count == run.frameLength)
        // NEEDS_CSUM: the checksum field holds the pseudo-header sum, finished it is valid.
        var finished = superFrame
        raw.withUnsafeBytes { h in
            finished.withUnsafeMutableBytes { InternetChecksum.completeIfNeeded(header: h.baseAddress!, frame: $0.baseAddress!, length: $0.count) }
        }
        #expect(Self.checksumsValid(finished))
        // Cut again: the original segments, byte for byte.
        #expect(Self.cut(superFrame, gsoSize: Int(header.gsoSize)) == wire)
    }

    @Test func coalescingStopsWhereTheFlowBreaks() {
        let mss = 1000
        // Three full segments, no PSH (built so: a flag changed afterwards would break the checksum).
        let a = (0..<3).map { i in
            Self.segment(seq: 1000 + UInt32(i * mss), payload: Self.payload(mss, seed: UInt8(i)), id: 100 + UInt16(i))
        }
        func runLength(_ frames: [[UInt8]]) -> Int { TCPCoalescer.run(in: ArrayQueue(frames), maximumLength: maximumFrameLength)?.count ?? 1 }
        #expect(runLength(a) == 3)
        // A gap in the sequence.
        let gap = Self.segment(seq: 1000 + 4 * UInt32(mss), payload: Self.payload(mss, seed: 9))
        #expect(runLength(a + [gap]) == 3)
        // Another connection.
        let other = Self.segment(seq: 1000 + 3 * UInt32(mss), payload: Self.payload(mss, seed: 9), sourcePort: 40001)
        #expect(runLength(a + [other]) == 3)
        // A FIN, a SYN, a different window, a different ACK number: never merged.
        let fin = Self.segment(seq: 1000 + 3 * UInt32(mss), flags: TCPFrameLayout.ack | TCPFrameLayout.fin, payload: Self.payload(mss, seed: 9))
        #expect(runLength(a + [fin]) == 3)
        let window = Self.segment(seq: 1000 + 3 * UInt32(mss), payload: Self.payload(mss, seed: 9), window: 100)
        #expect(runLength(a + [window]) == 3)
        let ack = Self.segment(seq: 1000 + 3 * UInt32(mss), ack: 0x0102_0305, payload: Self.payload(mss, seed: 9))
        #expect(runLength(a + [ack]) == 3)
        // A bigger segment after the first's size, or a short one in the middle, ends the run.
        let big = Self.segment(seq: 1000 + 3 * UInt32(mss), payload: Self.payload(mss + 1, seed: 9))
        #expect(runLength(a + [big]) == 3)
        let short = Self.segment(seq: 1000 + 3 * UInt32(mss), payload: Self.payload(10, seed: 9))
        let after = Self.segment(seq: 1000 + 3 * UInt32(mss) + 10, payload: Self.payload(mss, seed: 9))
        #expect(runLength(a + [short, after]) == 4)
        // A head that is not a plain data segment goes alone.
        #expect(runLength([fin] + a) == 1)
        #expect(runLength([Self.segment(seq: 1, payload: [])] + a) == 1)
        // The size limit: only what fits.
        #expect(TCPCoalescer.run(in: ArrayQueue(a), maximumLength: 54 + 2 * mss)?.count == 2)
        #expect(TCPCoalescer.run(in: ArrayQueue(a), maximumLength: 54 + mss) == nil)
    }

    /// As Linux GRO (inet_gro_receive checks the IPv4 header checksum, tcp4_gro_receive and
    /// tcp6_gro_receive validate the TCP checksum and flush on failure): a segment whose
    /// checksum is wrong is never merged, because the super-frame leaves with NEEDS_CSUM and
    /// the receiver would trust the checksum recomputed over corrupt bytes. It goes alone,
    /// untouched, so that the receiver counts it; the segments after it join again.
    @Test(arguments: [false, true]) func corruptSegmentsAreNeverJoined(ipv6: Bool) {
        let good = Self.flow(ipv6: ipv6, count: 6, mss: 1000, lastLength: 1000)
        var badPayload = good
        badPayload[2][badPayload[2].count - 10] ^= 0x40          // one payload bit flipped in transit
        let q = ArrayQueue(badPayload)
        #expect(TCPCoalescer.run(in: q, maximumLength: maximumFrameLength)?.count == 2)
        #expect(TCPCoalescer.run(in: q, from: 2, maximumLength: maximumFrameLength) == nil, "the corrupt segment goes alone")
        #expect(TCPCoalescer.run(in: q, from: 3, maximumLength: maximumFrameLength)?.count == 3)
        // A corrupt head goes alone too.
        var badHead = good
        badHead[0][badHead[0].count - 1] ^= 0x01
        #expect(TCPCoalescer.run(in: ArrayQueue(badHead), maximumLength: maximumFrameLength) == nil)
        // A wrong TCP checksum field, the payload intact.
        var badField = good
        let t = ipv6 ? 54 : 34
        badField[1][t + 16] ^= 0xff
        #expect(TCPCoalescer.run(in: ArrayQueue(badField), maximumLength: maximumFrameLength) == nil)
        if !ipv6 {
            // An IPv4 header checksum that does not hold.
            var badIP = good
            badIP[3][24] ^= 0xff
            #expect(TCPCoalescer.run(in: ArrayQueue(badIP), maximumLength: maximumFrameLength)?.count == 3)
        }
        // Unless the segment's own header says the checksum is to be filled in (NEEDS_CSUM)
        // or was checked already (DATA_VALID): trusted, as the kernel trusts them.
        let trusted = TrustingQueue(badPayload)
        #expect(TCPCoalescer.run(in: trusted, maximumLength: maximumFrameLength)?.count == 6)
    }

    /// A queue whose frames all carry NEEDS_CSUM or DATA_VALID in their virtio-net header.
    final class TrustingQueue: QueuedFrames {
        let inner: ArrayQueue
        init(_ list: [[UInt8]]) { inner = ArrayQueue(list) }
        var waiting: Int { inner.waiting }
        func frame(at index: Int) -> (bytes: UnsafeMutableRawPointer, length: Int) { inner.frame(at: index) }
        func checksumTrusted(at index: Int) -> Bool { true }
    }

    @Test func onlyCoveredPureAcksAreSkipped() {
        func ack(_ n: UInt32, window: UInt16 = 0xfaf0) -> [UInt8] { Self.segment(seq: 5000, ack: n, payload: [], window: window) }
        #expect(TCPCoalescer.supersededAcks(in: ArrayQueue([ack(10), ack(20), ack(30, window: 9)])) == 2)
        // A duplicate ACK signals loss: it stays.
        #expect(TCPCoalescer.supersededAcks(in: ArrayQueue([ack(10), ack(10), ack(30)])) == 0)
        // An older ACK after a newer one is not "covered".
        #expect(TCPCoalescer.supersededAcks(in: ArrayQueue([ack(30), ack(20)])) == 0)
        // Data between them, or another connection, ends the skipping.
        let data = Self.segment(seq: 5000, ack: 25, payload: Self.payload(10, seed: 1))
        #expect(TCPCoalescer.supersededAcks(in: ArrayQueue([ack(10), ack(20), data, ack(30)])) == 1)
        let other = Self.segment(seq: 5000, ack: 40, payload: [], sourcePort: 1)
        #expect(TCPCoalescer.supersededAcks(in: ArrayQueue([ack(10), other])) == 0)
        // Sequence-space wrap: 0xffff_fff0 -> 0x10 is newer.
        #expect(TCPCoalescer.supersededAcks(in: ArrayQueue([ack(0xffff_fff0), ack(0x10)])) == 1)
    }

    // MARK: iovec writer

    @Test func writerSpansBuffersAndReportsOverflow() {
        let a = UnsafeMutableRawPointer.allocate(byteCount: 3, alignment: 1)
        let b = UnsafeMutableRawPointer.allocate(byteCount: 5, alignment: 1)
        defer { a.deallocate(); b.deallocate() }
        let v = [iovec(iov_base: a, iov_len: 3), iovec(iov_base: nil, iov_len: 0), iovec(iov_base: b, iov_len: 5)]
        let source: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8, 9]
        v.withUnsafeBufferPointer { vec in
            var w = IOVectorWriter(vec)
            source.withUnsafeBytes { s in
                let first = w.write(s.baseAddress!, 2)
                let second = w.write(s.baseAddress! + 2, 6)
                #expect(first && second && w.written == 8)
                let ninth = w.write(s.baseAddress! + 8, 1)
                #expect(!ninth, "a ninth byte does not fit")
            }
        }
        #expect(Array(UnsafeRawBufferPointer(start: a, count: 3)) == [1, 2, 3])
        #expect(Array(UnsafeRawBufferPointer(start: b, count: 5)) == [4, 5, 6, 7, 8])
    }
}
