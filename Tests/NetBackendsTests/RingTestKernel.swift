import Foundation
import NetBackends

/// Memory whose end touches an inaccessible page (and whose start follows one): any read
/// or write outside it kills the test process, so "no out-of-bounds access" is checked by
/// the hardware, not by trust.
final class GuardedMemory {
    let base: UnsafeMutableRawPointer
    let size: Int
    private let mapping: UnsafeMutableRawPointer
    private let mappingSize: Int

    init(size: Int) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let size8 = (size + 7) / 8 * 8
        let rounded = (size8 + page - 1) / page * page
        mappingSize = rounded + 2 * page
        mapping = mmap(nil, mappingSize, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
        precondition(mapping != MAP_FAILED)
        precondition(mprotect(mapping + page, rounded, PROT_READ | PROT_WRITE) == 0)
        // Flush against the trailing guard page, 8-byte aligned like the kernel's rings.
        base = mapping + page + (rounded - size8)
        self.size = size8
    }

    deinit { munmap(mapping, mappingSize) }

    var memory: NetmapRingMemory { NetmapRingMemory(base: base, size: size) }
}

/// Deterministic random numbers for reproducible frame sizes and operation sequences.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// One netmap ring in guarded memory, with the test playing the kernel's part. Written
/// from netmap's header numbers directly (buf_ofs @0, num_slots @8, nr_buf_size @12,
/// head @20, cur @24, tail @28, slots of 16 bytes @256, NS_MOREFRAG 0x20), not through the
/// module under test, so that a layout mistake there shows here.
final class TestKernelRing {
    let slots: Int
    let bufferSize: Int
    let buffersOffset: Int
    let storage: GuardedMemory
    /// The kernel's own position on a TX ring: the next slot it will transmit.
    var transmitPosition = 0

    /// A TX ring starts with all but one slot free for the user (tail = slots - 1); an RX
    /// ring with nothing to read (tail = head = 0).
    init(slots: Int, bufferSize: Int, transmit: Bool) {
        self.slots = slots
        self.bufferSize = bufferSize
        buffersOffset = (256 + 16 * slots + 63) / 64 * 64
        storage = GuardedMemory(size: buffersOffset + slots * bufferSize)
        let r = storage.base
        r.initializeMemory(as: UInt8.self, repeating: 0, count: storage.size)
        r.storeBytes(of: Int64(buffersOffset), toByteOffset: 0, as: Int64.self)
        r.storeBytes(of: UInt32(slots), toByteOffset: 8, as: UInt32.self)
        r.storeBytes(of: UInt32(bufferSize), toByteOffset: 12, as: UInt32.self)
        // Buffers given out in reverse, so that slot i's buffer is not simply buffer i.
        for i in 0..<slots { setSlot(i, buffer: UInt32(slots - 1 - i), length: 0, flags: 0) }
        tail = transmit ? UInt32(slots - 1) : 0
    }

    var view: NetmapRingView {
        get throws { try storage.memory.ring(at: 0) }
    }

    var head: UInt32 {
        get { storage.base.load(fromByteOffset: 20, as: UInt32.self) }
        set { storage.base.storeBytes(of: newValue, toByteOffset: 20, as: UInt32.self) }
    }
    var cur: UInt32 { storage.base.load(fromByteOffset: 24, as: UInt32.self) }
    var tail: UInt32 {
        get { storage.base.load(fromByteOffset: 28, as: UInt32.self) }
        set { storage.base.storeBytes(of: newValue, toByteOffset: 28, as: UInt32.self) }
    }

    func slot(_ i: Int) -> (buffer: UInt32, length: Int, flags: UInt16) {
        let s = storage.base + 256 + 16 * i
        return (s.load(as: UInt32.self), Int(s.load(fromByteOffset: 4, as: UInt16.self)), s.load(fromByteOffset: 6, as: UInt16.self))
    }

    func setSlot(_ i: Int, buffer: UInt32, length: Int, flags: UInt16) {
        let s = storage.base + 256 + 16 * i
        s.storeBytes(of: buffer, as: UInt32.self)
        s.storeBytes(of: UInt16(truncatingIfNeeded: length), toByteOffset: 4, as: UInt16.self)
        s.storeBytes(of: flags, toByteOffset: 6, as: UInt16.self)
    }

    func buffer(_ index: UInt32) -> UnsafeMutableRawPointer { storage.base + buffersOffset + Int(index) * bufferSize }

    func next(_ i: Int) -> Int { i + 1 == slots ? 0 : i + 1 }

    /// Slots the user side owns, [head, tail).
    var userOwned: Int { (Int(tail) - Int(head) + slots) % slots }

    // MARK: TX ring: the kernel transmits what the user published

    /// Every whole frame between the kernel's position and `head`, gathered; then `tail`
    /// moves up to one short of the position, handing the slots back.
    func transmit(limit: Int = .max) -> [[UInt8]] {
        var frames: [[UInt8]] = []
        var frame: [UInt8] = []
        var i = transmitPosition
        var consumedTo = transmitPosition
        while i != Int(head) && frames.count < limit {
            let s = slot(i)
            frame += UnsafeRawBufferPointer(start: buffer(s.buffer), count: s.length)
            i = next(i)
            if s.flags & 0x20 == 0 {
                frames.append(frame)
                frame = []
                consumedTo = i
            }
        }
        transmitPosition = consumedTo
        tail = UInt32((consumedTo - 1 + slots) % slots)
        return frames
    }

    // MARK: RX ring: the kernel delivers frames for the user to read

    /// Writes `frame` at `tail` in fragments of at most `fragment` bytes (default: the
    /// buffer size), NS_MOREFRAG on all but the last, and moves `tail` past it. False
    /// (nothing written) when the ring lacks room: the kernel keeps one slot back.
    @discardableResult
    func deliver(_ frame: [UInt8], fragment: Int? = nil) -> Bool {
        let piece = min(fragment ?? bufferSize, bufferSize)
        let needed = max(1, (frame.count + piece - 1) / piece)
        guard needed <= slots - 1 - userOwned else { return false }
        var i = Int(tail)
        var at = 0
        for n in 0..<needed {
            let length = min(piece, frame.count - at)
            let s = slot(i)
            frame.withUnsafeBytes { buffer(s.buffer).copyMemory(from: $0.baseAddress! + at, byteCount: length) }
            setSlot(i, buffer: s.buffer, length: length, flags: n == needed - 1 ? 0 : 0x20)
            at += length
            i = next(i)
        }
        tail = UInt32(i)
        return true
    }
}

/// Test frames: recognisable bytes (a sequence number, then a pattern seeded by it).
enum RingFrames {
    static func make(length: Int, number: Int) -> [UInt8] {
        var g = SplitMix64(seed: UInt64(number) &* 7919 &+ UInt64(length))
        var f = [UInt8](repeating: 0, count: length)
        for i in 0..<length { f[i] = UInt8(truncatingIfNeeded: g.next()) }
        return f
    }

    /// Cuts `frame` into iovecs at `cuts` (offsets) and calls `body` with the list.
    static func withIOVecs<R>(_ frame: [UInt8], cuts: [Int] = [], _ body: (UnsafeBufferPointer<iovec>) -> R) -> R {
        frame.withUnsafeBytes { raw in
            let points = ([0] + cuts.filter { $0 > 0 && $0 < frame.count }.sorted() + [frame.count])
            var vecs: [iovec] = []
            for k in 0..<(points.count - 1) where points[k + 1] > points[k] {
                vecs.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: raw.baseAddress! + points[k]), iov_len: points[k + 1] - points[k]))
            }
            return vecs.withUnsafeBufferPointer { body($0) }
        }
    }
}

/// A receive buffer cut into iovecs of the given sizes.
final class ReceiveList {
    let storage: UnsafeMutableRawPointer
    let vecs: [iovec]
    let capacity: Int

    init(sizes: [Int]) {
        capacity = sizes.reduce(0, +)
        storage = .allocate(byteCount: max(capacity, 1), alignment: 64)
        var at = 0
        var v: [iovec] = []
        for s in sizes {
            v.append(iovec(iov_base: storage + at, iov_len: s))
            at += s
        }
        vecs = v
    }

    convenience init(capacity: Int) { self.init(sizes: [capacity]) }

    deinit { storage.deallocate() }

    func receive(_ r: NetmapRingReceiver) -> ReceiveResult { vecs.withUnsafeBufferPointer { r.receive(into: $0) } }

    func bytes(_ n: Int) -> [UInt8] { Array(UnsafeRawBufferPointer(start: storage, count: n)) }
}
