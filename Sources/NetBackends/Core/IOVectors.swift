#if canImport(Glibc)
import Glibc
#endif

/// Copying a frame between one contiguous buffer and an iovec list: what every backend
/// that holds frames itself (a bounce buffer, a stream's input, a queue) needs.
public enum IOVectors {
    /// Total bytes described by `vector`.
    @inline(__always)
    public static func length(of vector: UnsafeBufferPointer<iovec>) -> Int {
        var total = 0
        for v in vector { total &+= v.iov_len }
        return total
    }

    /// Copies `length` bytes from `source` into `vector`, in order. Returns false when the
    /// list is shorter than the frame (the caller then drops the frame whole).
    @inline(__always)
    public static func scatter(_ source: UnsafeRawPointer, length: Int, into vector: UnsafeBufferPointer<iovec>) -> Bool {
        var from = source
        var remaining = length
        for v in vector where remaining > 0 && v.iov_len > 0 {
            let n = min(v.iov_len, remaining)
            v.iov_base.copyMemory(from: from, byteCount: n)
            from += n
            remaining -= n
        }
        return remaining == 0
    }

    /// Copies every part of `vector` to `destination`, back to back; returns the bytes copied.
    @inline(__always)
    @discardableResult
    public static func gather(_ vector: UnsafeBufferPointer<iovec>, into destination: UnsafeMutableRawPointer) -> Int {
        var at = 0
        for v in vector where v.iov_len > 0 {
            (destination + at).copyMemory(from: v.iov_base, byteCount: v.iov_len)
            at += v.iov_len
        }
        return at
    }
}

extension NetBackend {
    /// Hands a frame the backend holds to the caller's buffers: whole, or not at all with a
    /// counted `.noSpace` drop (the seed's -ENOSPC). The frame is consumed either way.
    @inline(__always)
    public final func deliver(_ frame: UnsafeRawPointer, length: Int, into buffers: UnsafeBufferPointer<iovec>) -> ReceiveResult {
        if IOVectors.scatter(frame, length: length, into: buffers) { return .frame(length: length) }
        statistics.countDrop(.noSpace)
        return .dropped(length: length, reason: .noSpace)
    }
}

/// Writes pieces one after another into an iovec list (a header, then a frame's parts),
/// without a contiguous copy first.
public struct IOVectorWriter {
    private let vector: UnsafeBufferPointer<iovec>
    private var index = 0
    private var offset = 0
    /// Bytes written so far.
    public private(set) var written = 0

    public init(_ vector: UnsafeBufferPointer<iovec>) { self.vector = vector }

    /// Appends `length` bytes; false (and a partial write) when the list is full.
    @inline(__always)
    public mutating func write(_ source: UnsafeRawPointer, _ length: Int) -> Bool {
        var from = source
        var remaining = length
        while remaining > 0 {
            guard index < vector.count else { return false }
            let v = vector[index]
            let n = min(v.iov_len - offset, remaining)
            if n > 0 {
                (v.iov_base + offset).copyMemory(from: from, byteCount: n)
                from += n
                remaining -= n
                offset += n
                written += n
            }
            if offset == v.iov_len {
                index += 1
                offset = 0
            }
        }
        return true
    }
}
