import CNetBackends
#if canImport(Glibc)
import Glibc
#endif

/// Frames read ahead by a `SeqpacketBackend`: one `recvmmsg(2)` fills up to `capacity`
/// preallocated slots (one message each), and `receive` serves them one by one.
/// Nothing is allocated per frame.
final class SeqpacketReceiveRing {
    private let slots: MessageSlots
    var capacity: Int { slots.capacity }
    var slotSize: Int { slots.slotSize }
    private var next = 0
    private var filled = 0

    init(capacity: Int, slotSize: Int) {
        slots = MessageSlots(capacity: capacity, slotSize: slotSize, vectorLength: slotSize)
    }

    var isEmpty: Bool { next == filled }

    /// One slot as read: the message's whole length (MSG_TRUNC: even when it was cut),
    /// whether it was cut, and its bytes. Length 0 is the peer's end of file (frames are
    /// never empty, and recvmmsg reports end of file as empty messages).
    struct Slot {
        let length: Int
        let truncated: Bool
        let bytes: UnsafeRawPointer
    }

    /// The next frame without removing it; nil when the ring is empty.
    @inline(__always)
    func peek() -> Slot? {
        guard next < filled else { return nil }
        let h = slots.headers[next]
        return Slot(length: Int(h.msg_len), truncated: h.msg_hdr.msg_flags & cnb_MSG_TRUNC != 0,
                    bytes: UnsafeRawPointer(slots.bytes(next)))
    }

    @inline(__always)
    func removeFirst() { next += 1 }

    /// Reads up to `capacity` messages (the ring must be empty). Returns how many, 0 when
    /// none waits.
    func fill(fd: Int32, device: @autoclosure () -> String) throws(SystemCallError) -> Int {
        next = 0
        filled = 0
        guard case .processed(let n) = try Syscall.recvmmsg(fd, slots.headers, capacity, flags: cnb_MSG_DONTWAIT | cnb_MSG_TRUNC,
                                                              device: device()) else { return 0 }
        filled = n
        return n
    }

    /// Forgets the frames read ahead (they came from a peer that is gone).
    func reset() {
        next = 0
        filled = 0
    }
}
