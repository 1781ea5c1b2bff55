#if canImport(Glibc)
import CNetBackends
import Glibc
#endif

/// Bytes owed to the stream, in order: small records gathered during a relay batch (one
/// write per batch instead of one per frame), and the unsent tail of a record after a
/// partial write. Sending these before anything else preserves frame boundaries.
final class StreamOutput {
    private let capacity: Int
    private let buffer: UnsafeMutableRawPointer
    private var start = 0
    private var end = 0

    init(capacity: Int) {
        self.capacity = capacity
        buffer = .allocate(byteCount: capacity, alignment: 64)
    }

    deinit { buffer.deallocate() }

    var isEmpty: Bool { start == end }
    var count: Int { end - start }
    /// Room left at the end for another record.
    var space: Int { capacity - end }

    /// Appends `[u32 big-endian length][frame]`; the caller checked `space`.
    @inline(__always)
    func append(_ vector: UnsafeBufferPointer<iovec>, length: Int) {
        (buffer + end).storeBytes(of: UInt32(length).bigEndian, as: UInt32.self)
        end += 4
        end += IOVectors.gather(vector, into: buffer + end)
    }

    func reset() {
        start = 0
        end = 0
    }

    /// Copies the bytes of `vector` that come after the first `written` ones.
    func keep(_ vector: UnsafeBufferPointer<iovec>, skipping written: Int) {
        var skip = written
        end = 0
        start = 0
        for v in vector {
            if skip >= v.iov_len { skip -= v.iov_len; continue }
            let n = v.iov_len - skip
            precondition(end + n <= capacity, "a frame is larger than the output buffer")
            (buffer + end).copyMemory(from: v.iov_base! + skip, byteCount: n)
            end += n
            skip = 0
        }
    }

    /// Writes as much of the tail as the socket takes; true once it is all out.
    func flush(to fd: Int32, device: String) throws(SystemCallError) -> Bool {
        while start < end {
            guard case .processed(let n) = try Syscall.send(fd, buffer + start, end - start, flags: cnb_MSG_NOSIGNAL,
                                                             device: device) else { return false }
            start += n
        }
        reset()
        return true
    }
}
