#if canImport(Glibc)
import Glibc
#endif

/// A connection's receive buffer: the socket is read in big chunks and whole
/// `[u32 big-endian length][frame]` records are handed out from it, so a burst of small
/// frames costs one read and nothing is allocated per frame.
final class StreamInput {
    static let capacity = 256 * 1024
    private let buffer: UnsafeMutableRawPointer
    private var start = 0
    private var end = 0
    /// Largest legal record body; anything longer means a broken or hostile peer.
    let maximumLength: Int

    enum Next {
        /// A whole frame of `length` bytes at `bytes`; `consume(length)` once copied.
        case frame(bytes: UnsafeRawPointer, length: Int)
        case needMore
        /// The stream cannot be trusted any more; the text says why.
        case bad(String)
    }

    enum Fill {
        case read
        case wouldBlock
        case endOfStream
    }

    init(maximumLength: Int) {
        self.maximumLength = maximumLength
        buffer = .allocate(byteCount: Self.capacity, alignment: 64)
    }

    deinit { buffer.deallocate() }

    var isEmpty: Bool { start == end }
    var bufferedBytes: Int { end - start }

    func reset() {
        start = 0
        end = 0
    }

    /// Looks at the buffered bytes; makes room for the rest of a partial frame.
    @inline(__always)
    func next() -> Next {
        let available = end - start
        guard available >= 4 else { compactIfFull(); return .needMore }
        let length = Int(UInt32(bigEndian: (buffer + start).loadUnaligned(as: UInt32.self)))
        if length == 0 { return .bad("length 0 in the frame header") }
        if length > maximumLength {
            return .bad("length \(length) in the frame header is above the largest legal frame (\(maximumLength))")
        }
        guard available >= 4 + length else {
            if start + 4 + length > Self.capacity { compact() }
            return .needMore
        }
        return .frame(bytes: UnsafeRawPointer(buffer + start + 4), length: length)
    }

    /// Drops the frame `next()` returned.
    @inline(__always)
    func consume(_ length: Int) {
        start += 4 + length
        if start == end { start = 0; end = 0 }
    }

    /// Reads what the socket holds into the free tail of the buffer.
    func fill(from fd: Int32, device: String) throws(SystemCallError) -> Fill {
        compactIfFull()
        switch try Syscall.read(fd, buffer + end, Self.capacity - end, device: device) {
        case .wouldBlock: return .wouldBlock
        case .processed(0): return .endOfStream
        case .processed(let n):
            end += n
            return .read
        }
    }

    /// Whether a whole frame waits, so the backend can ask to be called again even
    /// though the socket itself is drained.
    var holdsWholeFrame: Bool {
        let available = end - start
        guard available >= 4 else { return false }
        let length = Int(UInt32(bigEndian: (buffer + start).loadUnaligned(as: UInt32.self)))
        return length == 0 || length > maximumLength || available >= 4 + length
    }

    private func compactIfFull() {
        if end == Self.capacity && start > 0 { compact() }
    }

    private func compact() {
        let n = end - start
        if n > 0 && start > 0 { memmove(buffer, buffer + start, n) }
        start = 0
        end = n
    }
}
