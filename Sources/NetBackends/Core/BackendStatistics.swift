import CNetBackends

/// Counters kept by a backend or a relay direction.
///
/// One writer, any number of readers: only the loop thread counts, and any thread may
/// read a counter or take a `snapshot()` while traffic flows (a VMM's monitoring thread).
/// Each counter is a 64-bit word read and written with relaxed atomics through the C
/// shim. On the single writer an increment is a plain load and store (no locked
/// read-modify-write), so counting stays as cheap as before; a reader never sees a torn
/// value, and ThreadSanitizer sees no race. Counters are not mutually consistent in a
/// snapshot (frames and bytes may be one frame apart); each one is exact.
public final class BackendStatistics: @unchecked Sendable {
    // Slot layout: the four traffic counters, then one per DropReason.
    private static let framesSlot = 0, bytesSlot = 1, gsoSlot = 2, segmentedSlot = 3, dropBase = 4
    private let words: UnsafeMutablePointer<UInt64>
    private let count: Int

    public init() {
        count = Self.dropBase + DropReason.allCases.count
        words = .allocate(capacity: count)
        words.initialize(repeating: 0, count: count)
    }

    deinit { words.deallocate() }

    @inline(__always) private func load(_ i: Int) -> UInt64 { cnb_relaxed_load_u64(words + i) }
    @inline(__always) private func store(_ i: Int, _ v: UInt64) { cnb_relaxed_store_u64(words + i, v) }

    /// Frames handed on whole. Written on the loop thread only.
    public var frames: UInt64 {
        get { load(Self.framesSlot) }
        set { store(Self.framesSlot, newValue) }
    }
    public var bytes: UInt64 {
        get { load(Self.bytesSlot) }
        set { store(Self.bytesSlot, newValue) }
    }
    /// Frames that carried a GSO header (one super-frame, many wire segments).
    public var gsoFrames: UInt64 {
        get { load(Self.gsoSlot) }
        set { store(Self.gsoSlot, newValue) }
    }
    /// GSO frames cut into segments in software because the receiver could not take them.
    public var softwareSegmented: UInt64 {
        get { load(Self.segmentedSlot) }
        set { store(Self.segmentedSlot, newValue) }
    }

    /// Counts one drop. Loop thread only.
    @inline(__always)
    public func countDrop(_ reason: DropReason) {
        let i = Self.dropBase + reason.rawValue
        store(i, load(i) &+ 1)
    }

    public func drops(_ reason: DropReason) -> UInt64 { load(Self.dropBase + reason.rawValue) }

    public var totalDrops: UInt64 { DropReason.allCases.reduce(0) { $0 &+ drops($1) } }

    /// Every reason with its count, zeros included, for reports.
    public var dropsByReason: [(DropReason, UInt64)] { DropReason.allCases.map { ($0, drops($0)) } }

    /// The counters at one moment, safe to take from any thread.
    public struct Snapshot: Sendable, Equatable {
        public var frames: UInt64
        public var bytes: UInt64
        public var gsoFrames: UInt64
        public var softwareSegmented: UInt64
        /// Every reason, zeros included.
        public var drops: [DropReason: UInt64]
        public var totalDrops: UInt64 { drops.values.reduce(0, &+) }
    }

    public func snapshot() -> Snapshot {
        var d: [DropReason: UInt64] = [:]
        for r in DropReason.allCases { d[r] = drops(r) }
        return Snapshot(frames: frames, bytes: bytes, gsoFrames: gsoFrames, softwareSegmented: softwareSegmented, drops: d)
    }
}
