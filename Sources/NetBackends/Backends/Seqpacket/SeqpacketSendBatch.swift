import CNetBackends
#if canImport(Glibc)
import Glibc
#endif

/// Frames on their way out of a `SeqpacketBackend`: copied into preallocated slots as
/// the relay sends them, then written with one `sendmmsg(2)` per batch (one message
/// per frame, as before). Nothing is allocated per frame.
///
/// Frames `0..<count` are queued, `0..<sent` of them already written; a partial write
/// (socket full) keeps the rest for the next `write`.
final class SeqpacketSendBatch {
    private let slots: MessageSlots
    var capacity: Int { slots.capacity }
    var slotSize: Int { slots.slotSize }
    private(set) var count = 0
    private var sent = 0

    init(capacity: Int, slotSize: Int) {
        slots = MessageSlots(capacity: capacity, slotSize: slotSize, vectorLength: 0)
    }

    var isFull: Bool { count == capacity }
    /// Frames queued and not yet written.
    var pending: Int { count - sent }

    /// Copies `frame` into the next slot, its `headerLength`-byte virtio-net header (0, 10
    /// or 12) made `linkHeaderLength` bytes (the same, or 12). The caller checked that the
    /// result fits a slot.
    @inline(__always)
    func append(_ frame: UnsafeBufferPointer<iovec>, length: Int, headerLength: Int, linkHeaderLength: Int) {
        let slot = slots.bytes(count)
        let shift = linkHeaderLength - headerLength
        IOVectors.gather(frame, into: slot + shift)
        if shift > 0 {
            // A 10-byte header moves to the front and gains num_buffers; no header gets a
            // zeroed one. The two-byte overlap makes a plain copy unsafe: go through a word.
            var saved = (UInt64(0), UInt16(0))
            if headerLength > 0 {
                saved.0 = (slot + shift).loadUnaligned(as: UInt64.self)
                saved.1 = (slot + shift).loadUnaligned(fromByteOffset: 8, as: UInt16.self)
            }
            slot.storeBytes(of: saved.0, as: UInt64.self)
            slot.storeBytes(of: saved.1, toByteOffset: 8, as: UInt16.self)
            slot.storeBytes(of: UInt16(1).littleEndian, toByteOffset: 10, as: UInt16.self)
        }
        slots.vectors[count].iov_len = length + shift
        count += 1
    }

    /// Result of `write`: everything written, socket full (frames kept), or an error
    /// number for the caller to interpret (the frames that caused it are dropped).
    enum WriteResult {
        case done
        case full
        case failed(errno: Int32, dropped: Int)
    }

    /// Writes what is queued with `sendmmsg(2)` until done or the socket is full.
    /// EMSGSIZE drops the one frame the kernel refused and goes on; any other error
    /// drops the whole rest of the batch and is returned.
    func write(fd: Int32, device: @autoclosure () -> String) -> WriteResult {
        while sent < count {
            let r: IOResult
            do {
                r = try Syscall.sendmmsg(fd, slots.headers + sent, count - sent, flags: cnb_MSG_DONTWAIT | cnb_MSG_NOSIGNAL,
                                         device: device())
            } catch {
                if error.errno == EMSGSIZE {
                    sent += 1
                    if sent == count { reset() }
                    return .failed(errno: EMSGSIZE, dropped: 1)
                }
                let dropped = count - sent
                reset()
                return .failed(errno: error.errno, dropped: dropped)
            }
            guard case .processed(let n) = r else { return .full }
            sent += n
        }
        reset()
        return .done
    }

    /// Forgets every queued frame (a new peer must not get the old one's frames).
    /// Returns how many were not written.
    @discardableResult
    func reset() -> Int {
        let dropped = count - sent
        count = 0
        sent = 0
        return dropped
    }
}
