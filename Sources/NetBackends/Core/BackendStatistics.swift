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
    // Slot layout: the four traffic counters, then three blocks of one word per
    // DropReason: all drops, lost after send, lost before receive.
    private static let framesSlot = 0, bytesSlot = 1, gsoSlot = 2, segmentedSlot = 3
    private static let reasons = DropReason.allCases.count
    private static let dropBase = 4
    private static let afterSendBase = dropBase + reasons
    private static let beforeReceiveBase = afterSendBase + reasons
    private let words: UnsafeMutablePointer<UInt64>

    public init() {
        let count = Self.beforeReceiveBase + Self.reasons
        words = .allocate(capacity: count)
        words.initialize(repeating: 0, count: count)
    }

    deinit { words.deallocate() }

    @inline(__always) private func load(_ i: Int) -> UInt64 { cnb_relaxed_load_u64(words + i) }
    @inline(__always) private func store(_ i: Int, _ v: UInt64) { cnb_relaxed_store_u64(words + i, v) }
    @inline(__always) private func add(_ i: Int, _ n: UInt64) { store(i, load(i) &+ n) }

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
    public func countDrop(_ reason: DropReason) { add(Self.dropBase + reason.rawValue, 1) }

    /// Drops no `send` or `receive` result carried, so that no caller counted them: frames
    /// a backend had taken (`.sent`) and lost later (a batch refused, the slirp helper's
    /// input), and frames lost before any `receive` could return them (a full queue). A
    /// relay's report adds the first to the direction into the backend, the second to the
    /// direction out of it. Each is also in `drops`.
    @inline(__always)
    public func countLostAfterSend(_ reason: DropReason, _ n: UInt64 = 1) {
        add(Self.dropBase + reason.rawValue, n)
        add(Self.afterSendBase + reason.rawValue, n)
    }

    /// A frame is lost before `receive` could hand it out (see `countLostAfterSend`).
    @inline(__always)
    public func countLostBeforeReceive(_ reason: DropReason, _ n: UInt64 = 1) {
        add(Self.dropBase + reason.rawValue, n)
        add(Self.beforeReceiveBase + reason.rawValue, n)
    }

    public func drops(_ reason: DropReason) -> UInt64 { load(Self.dropBase + reason.rawValue) }
    public func lostAfterSend(_ reason: DropReason) -> UInt64 { load(Self.afterSendBase + reason.rawValue) }
    public func lostBeforeReceive(_ reason: DropReason) -> UInt64 { load(Self.beforeReceiveBase + reason.rawValue) }

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
