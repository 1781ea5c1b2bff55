import CNetBackends
#if canImport(Glibc)
import Glibc
#endif

/// Frames libslirp produced, waiting for the frontend: a ring of preallocated slots.
///
/// libslirp calls its send-packet callback synchronously from inside `slirp_input` and
/// `slirp_pollfds_poll`; the callback only copies into the next free slot here, so the
/// frontend is never re-entered from inside libslirp. An eventfd is readable while the
/// ring holds frames: the backend watches it, so frames reach the frontend through the
/// event loop like any descriptor's data (and receive enable/disable works as usual).
/// It is written when the ring turns non-empty and read when it turns empty, so it
/// costs two system calls per burst, not per frame.
final class SlirpFrameQueue {
    let slotSize: Int
    let capacity: Int
    /// Readable while frames wait.
    let readyFD: Int32
    private let storage: UnsafeMutableRawPointer
    private let lengths: UnsafeMutablePointer<Int>
    private var head = 0      // next slot to pop
    private var count = 0
    private(set) var overflowDrops: UInt64 = 0
    private(set) var oversizeDrops: UInt64 = 0
    /// Where drops are reported (`queue_full`, `oversized`, lost before any receive): the
    /// in-process backend's statistics, or the helper's, which it sends to netbe.
    var statistics: BackendStatistics?

    /// `slotSize`: the largest frame kept; `capacity`: frames held before dropping.
    init(slotSize: Int, capacity: Int) throws(SystemCallError) {
        readyFD = try Syscall.check("eventfd", device: "slirp frame queue") { eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC)) }
        self.slotSize = slotSize
        self.capacity = capacity
        storage = .allocate(byteCount: slotSize * capacity, alignment: 64)
        lengths = .allocate(capacity: capacity)
        lengths.initialize(repeating: 0, count: capacity)
    }

    deinit {
        storage.deallocate()
        lengths.deallocate()
        _ = Glibc.close(readyFD)
    }

    var isEmpty: Bool { count == 0 }

    /// Copies one frame in; a full ring or an oversized frame is dropped and counted
    /// (libslirp's contract allows it: TCP retransmits).
    @inline(__always)
    func push(_ frame: UnsafeRawPointer, length: Int) {
        guard length <= slotSize else {
            oversizeDrops &+= 1
            statistics?.countLostBeforeReceive(.oversized)
            return
        }
        guard count < capacity else {
            overflowDrops &+= 1
            statistics?.countLostBeforeReceive(.queueFull)
            return
        }
        let slot = (head + count) % capacity
        (storage + slot * slotSize).copyMemory(from: frame, byteCount: length)
        lengths[slot] = length
        count += 1
        if count == 1 {
            var one: UInt64 = 1
            _ = try? Syscall.write(readyFD, &one, 8, device: "slirp frame queue")
        }
    }

    /// Frames waiting.
    var waiting: Int { count }

    /// The `index`-th waiting frame (0 = head), in place: the slirp helper writes
    /// frames to its socket straight from the slots. Valid until removed.
    @inline(__always)
    func frame(at index: Int) -> (bytes: UnsafeMutableRawPointer, length: Int) {
        let slot = (head + index) % capacity
        return (storage + slot * slotSize, lengths[slot])
    }

    /// Removes the first `n` waiting frames (after they were written out in place).
    func removeFirst(_ n: Int) {
        let k = min(n, count)
        head = (head + k) % capacity
        count -= k
        if count == 0 && k > 0 {
            var v: UInt64 = 0
            _ = try? Syscall.read(readyFD, &v, 8, device: "slirp frame queue")
        }
    }

    /// Length of the frame at the head, 0 when empty.
    var headLength: Int { count == 0 ? 0 : lengths[head] }

    /// Copies the head frame into `buffers` and removes it. Returns its length, or
    /// nil when empty; a frame that does not fit is removed and reported by a negative length.
    @inline(__always)
    func pop(into buffers: UnsafeBufferPointer<iovec>) -> Int? {
        guard count > 0 else { return nil }
        let length = lengths[head]
        let fits = IOVectors.scatter(storage + head * slotSize, length: length, into: buffers)
        head = (head + 1) % capacity
        count -= 1
        if count == 0 {
            var v: UInt64 = 0
            _ = try? Syscall.read(readyFD, &v, 8, device: "slirp frame queue")
        }
        return fits ? length : -length
    }
}

extension SlirpFrameQueue: QueuedFrames {}
