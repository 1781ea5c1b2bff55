#if canImport(Glibc)
import Glibc
#endif

/// A position in an iovec list, for copying between a guest's buffers and a caller's
/// without a contiguous copy in between.
struct IOVectorCursor {
    let vector: UnsafePointer<iovec>
    let count: Int
    var index = 0
    var offset = 0

    init(_ vector: UnsafePointer<iovec>, _ count: Int) {
        self.vector = vector
        self.count = count
    }

    /// Copies up to `n` bytes from `source` into this list; returns how many fitted.
    @inline(__always)
    mutating func put(_ source: UnsafeRawPointer, _ n: Int) -> Int {
        var done = 0
        while done < n && index < count {
            let v = vector[index]
            let k = min(v.iov_len - offset, n - done)
            if k > 0 {
                (v.iov_base + offset).copyMemory(from: source + done, byteCount: k)
                done += k
                offset += k
            }
            if offset == v.iov_len { index += 1; offset = 0 }
        }
        return done
    }

    /// Copies up to `n` bytes out of this list into `destination`; returns how many.
    @inline(__always)
    mutating func take(_ destination: UnsafeMutableRawPointer, _ n: Int) -> Int {
        var done = 0
        while done < n && index < count {
            let v = vector[index]
            let k = min(v.iov_len - offset, n - done)
            if k > 0 {
                (destination + done).copyMemory(from: v.iov_base + offset, byteCount: k)
                done += k
                offset += k
            }
            if offset == v.iov_len { index += 1; offset = 0 }
        }
        return done
    }

    /// Copies up to `n` bytes from `source`'s position into this list's; returns how many.
    @inline(__always)
    mutating func copy(_ n: Int, from source: inout IOVectorCursor) -> Int {
        var done = 0
        while done < n && index < count && source.index < source.count {
            let d = vector[index], s = source.vector[source.index]
            let k = min(d.iov_len - offset, s.iov_len - source.offset, n - done)
            if k > 0 {
                (d.iov_base + offset).copyMemory(from: s.iov_base + source.offset, byteCount: k)
                done += k
                offset += k
                source.offset += k
            }
            if offset == d.iov_len { index += 1; offset = 0 }
            if source.offset == s.iov_len { source.index += 1; source.offset = 0 }
        }
        return done
    }

    /// The address of byte `at` from the list's start, or nil past its end.
    func address(at: Int) -> UnsafeMutableRawPointer? {
        var rest = at
        for i in 0..<count {
            if rest < vector[i].iov_len { return vector[i].iov_base + rest }
            rest -= vector[i].iov_len
        }
        return nil
    }
}
