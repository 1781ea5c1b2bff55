#if canImport(Glibc)
import Glibc
#endif

/// Fuzzing entry point (Fuzz/, `@_spi(Fuzzing)`): frames as a tap, a guest or libslirp
/// could hand them over go through the software offloads: `TCPFrameLayout`, the
/// segmenter (`TCPSegmenter`, with the header's `gso_size`) and the coalescer
/// (`TCPCoalescer`: superseded ACKs, runs, their iovecs and headers), each frame in a
/// buffer of exactly its size so that a read outside it shows (ASan).
/// Input: `gso_size` (u16 little-endian), then frames, each `[u16 big-endian length][bytes]`.
@_spi(Fuzzing) public enum OffloadFuzzing {
    struct Queue: QueuedFrames {
        var frames: [(bytes: UnsafeMutableRawPointer, length: Int)] = []
        var waiting: Int { frames.count }
        func frame(at index: Int) -> (bytes: UnsafeMutableRawPointer, length: Int) { frames[index] }
    }

    public static func run(_ data: UnsafeRawBufferPointer) {
        guard data.count >= 2 else { return }
        let gsoSize = Int(data[0]) | Int(data[1]) << 8
        var queue = Queue()
        defer { for f in queue.frames { f.bytes.deallocate() } }
        var at = 2
        while at + 2 <= data.count {
            let length = min(Int(data[at]) << 8 | Int(data[at + 1]), data.count - at - 2)
            let bytes = UnsafeMutableRawPointer.allocate(byteCount: max(length, 1), alignment: 1)
            bytes.copyMemory(from: data.baseAddress! + at + 2, byteCount: length)
            queue.frames.append((bytes, length))
            at += 2 + length
        }
        for f in queue.frames { segment(f.bytes, length: f.length, gsoSize: gsoSize) }
        coalesce(queue)
    }

    private static func segment(_ frame: UnsafeRawPointer, length: Int, gsoSize: Int) {
        if let l = TCPFrameLayout(frame, length: length) {
            fuzzCheck(l.tcpOffset >= 34 && l.headerLength >= l.tcpOffset + 20 && l.payloadLength >= 0
                         && l.headerLength + l.payloadLength <= length, "layout outside the frame: \(l)")
        }
        guard var s = TCPSegmenter(frame: frame, length: length, gsoSize: gsoSize) else { return }
        let room = s.maximumSegmentLength
        let out = UnsafeMutableRawPointer.allocate(byteCount: room, alignment: 1)
        defer { out.deallocate() }
        let expected = s.count
        var made = 0
        while let n = s.next(into: out) {
            fuzzCheck(n <= room, "segment of \(n) bytes in room for \(room)")
            made += 1
            fuzzCheck(made <= expected, "more segments than count (\(expected))")
            if let cut = TCPFrameLayout(out, length: n) {
                fuzzCheck(cut.headerLength + cut.payloadLength == n, "a segment's IP length disagrees with its size")
            }
        }
        fuzzCheck(made == expected, "\(made) segments, count said \(expected)")
    }

    private static func coalesce(_ queue: Queue) {
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: TCPCoalescer.scratchSize, alignment: 8)
        let vectors = UnsafeMutablePointer<iovec>.allocate(capacity: 1 + TCPCoalescer.maximumSegments)
        defer { scratch.deallocate(); vectors.deallocate() }
        var at = 0
        while at < queue.waiting {
            at += TCPCoalescer.supersededAcks(in: queue, from: at)
            fuzzCheck(at < queue.waiting, "superseded ACKs ran past the queue")
            guard let run = TCPCoalescer.run(in: queue, from: at, maximumLength: maximumFrameLength) else {
                at += 1
                continue
            }
            fuzzCheck(run.count >= 2 && at + run.count <= queue.waiting && run.frameLength <= maximumFrameLength,
                         "run of \(run.count) from \(at) in \(queue.waiting), \(run.frameLength) bytes")
            let n = TCPCoalescer.describe(run, in: queue, from: at, headerLength: VirtioNetHeader.mergeableLength,
                                          scratch: scratch, into: vectors)
            fuzzCheck(n == 1 + run.count, "describe gave \(n) iovecs for \(run.count) segments")
            let total = IOVectors.length(of: UnsafeBufferPointer(start: vectors, count: n))
            fuzzCheck(total == VirtioNetHeader.mergeableLength + run.frameLength,
                         "iovecs hold \(total) bytes, the run \(run.frameLength) + header")
            // The joined frame, gathered, must read back as the run says.
            let joined = UnsafeMutableRawPointer.allocate(byteCount: total, alignment: 1)
            defer { joined.deallocate() }
            IOVectors.gather(UnsafeBufferPointer(start: vectors, count: n), into: joined)
            let frame = joined + VirtioNetHeader.mergeableLength
            let l = TCPFrameLayout(frame, length: run.frameLength)
            fuzzCheck(l?.payloadLength == run.payloadLength, "the joined frame's IP length disagrees with the run")
            at += run.count
        }
    }
}
