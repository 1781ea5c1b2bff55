import CNetBackends
#if canImport(Glibc)
import Glibc
#endif

/// Preallocated message slots for `sendmmsg(2)`/`recvmmsg(2)`: one block of `capacity`
/// slots of `slotSize` bytes, each with its iovec and mmsghdr, set up once so that no
/// batch allocates. Only the pages frames touch become resident.
final class MessageSlots {
    let capacity: Int
    let slotSize: Int
    let storage: UnsafeMutableRawPointer
    let vectors: UnsafeMutablePointer<iovec>
    let headers: UnsafeMutablePointer<cnb_mmsghdr>

    /// `vectorLength`: each iovec's initial length (a receive ring offers whole slots,
    /// a send batch sets each frame's length as it is queued).
    init(capacity: Int, slotSize: Int, vectorLength: Int) {
        self.capacity = capacity
        self.slotSize = slotSize
        storage = .allocate(byteCount: capacity * slotSize, alignment: 64)
        vectors = .allocate(capacity: capacity)
        headers = .allocate(capacity: capacity)
        for i in 0..<capacity {
            vectors[i] = iovec(iov_base: storage + i * slotSize, iov_len: vectorLength)
            var h = cnb_mmsghdr()
            h.msg_hdr.msg_iov = vectors + i
            h.msg_hdr.msg_iovlen = 1
            headers[i] = h
        }
    }

    deinit {
        storage.deallocate()
        vectors.deallocate()
        headers.deallocate()
    }

    /// The bytes of slot `i`.
    @inline(__always)
    func bytes(_ i: Int) -> UnsafeMutableRawPointer { storage + i * slotSize }
}
