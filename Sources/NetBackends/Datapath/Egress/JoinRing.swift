#if canImport(Glibc)
import Glibc
#endif

/// Frames a relay direction reads ahead so that runs of TCP segments can leave as one GSO
/// super-frame (`TCPCoalescer`) for a sink that takes them: up to `capacity` frames, each
/// read straight into its own preallocated slot (with the source's virtio-net header in
/// front), delivered in order from `next`. The slots are one allocation made once; only
/// the pages that frames touch become resident.
final class JoinRing: QueuedFrames {
    let capacity: Int
    let slotSize: Int
    private let storage: UnsafeMutableRawPointer
    private let lengths: UnsafeMutablePointer<Int>
    /// One iovec per slot, offered whole to `receive`.
    let vectors: UnsafeMutablePointer<iovec>
    /// Frames read (slots `0..<count` hold frames).
    @exclusivity(unchecked) var count = 0
    /// The next frame to deliver.
    @exclusivity(unchecked) var next = 0
    /// The source's header length, skipped by the `QueuedFrames` view.
    @exclusivity(unchecked) var headerLength = 0

    init(capacity: Int, slotSize: Int) {
        self.capacity = capacity
        self.slotSize = slotSize
        storage = .allocate(byteCount: capacity * slotSize, alignment: 64)
        lengths = .allocate(capacity: capacity)
        lengths.initialize(repeating: 0, count: capacity)
        vectors = .allocate(capacity: capacity)
        for i in 0..<capacity { (vectors + i).initialize(to: iovec(iov_base: storage + i * slotSize, iov_len: slotSize)) }
    }

    deinit {
        storage.deallocate()
        lengths.deallocate()
        vectors.deallocate()
    }

    @inline(__always) func slot(_ i: Int) -> UnsafeMutableRawPointer { storage + i * slotSize }
    @inline(__always) func length(_ i: Int) -> Int { lengths[i] }
    @inline(__always) func append(length: Int) { lengths[count] = length; count += 1 }
    var isFull: Bool { count == capacity }
    var isDrained: Bool { next == count }
    func reset() { count = 0; next = 0 }

    // QueuedFrames: the frames not yet delivered, without their virtio-net header.
    var waiting: Int { count - next }
    func frame(at index: Int) -> (bytes: UnsafeMutableRawPointer, length: Int) {
        let i = next + index
        return (slot(i) + headerLength, lengths[i] - headerLength)
    }
    /// The source's header flags NEEDS_CSUM or DATA_VALID: the checksum is not verified.
    func checksumTrusted(at index: Int) -> Bool {
        headerLength > 0 && slot(next + index).load(as: UInt8.self)
            & (VirtioNetHeader.Flags.needsCsum.rawValue | VirtioNetHeader.Flags.dataValid.rawValue) != 0
    }
}
