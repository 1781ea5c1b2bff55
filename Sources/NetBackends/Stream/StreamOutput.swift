#if canImport(Glibc)
import Glibc
#endif

/// The unsent tail of a frame after a partial write. Keeping it here (and sending it
/// before anything else) preserves frame boundaries on the stream: the frame counts as
/// sent, and further sends would-block until the tail is out.
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
            let n = Glibc.send(fd, buffer + start, end - start, Int32(MSG_NOSIGNAL))
            if n < 0 {
                let e = errno
                if e == EINTR { continue }
                if e == EAGAIN || e == ENOBUFS { return false }
                throw SystemCallError(call: "send", device: device, errno: e)
            }
            start += n
        }
        reset()
        return true
    }
}
