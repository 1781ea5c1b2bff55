/// Counters kept by a backend or a relay direction. Updated on the loop thread only;
/// plain integers so that counting costs nothing on the hot path. For the same reason
/// they skip Swift's run-time exclusivity check (a TLS lookup and a call per access,
/// ~1/3 of netbe's per-frame instructions under callgrind): one thread touches them.
public final class BackendStatistics: @unchecked Sendable {
    @exclusivity(unchecked) public var frames: UInt64 = 0
    @exclusivity(unchecked) public var bytes: UInt64 = 0
    /// Frames that carried a GSO header (one super-frame, many wire segments).
    @exclusivity(unchecked) public var gsoFrames: UInt64 = 0
    /// GSO frames cut into segments in software because the receiver could not take them.
    @exclusivity(unchecked) public var softwareSegmented: UInt64 = 0
    @exclusivity(unchecked) private var dropCounts = [UInt64](repeating: 0, count: DropReason.allCases.count)
    /// Drops no `send` or `receive` result carried, so that no caller counted them: frames
    /// a backend had taken (`.sent`) and lost later (a batch refused, the slirp helper's
    /// input), and frames lost before any `receive` could return them (a full queue). A
    /// relay's report adds the first to the direction into the backend, the second to the
    /// direction out of it. Each is also in `drops`.
    @exclusivity(unchecked) private var afterSend = [UInt64](repeating: 0, count: DropReason.allCases.count)
    @exclusivity(unchecked) private var beforeReceive = [UInt64](repeating: 0, count: DropReason.allCases.count)

    public init() {}

    @inline(__always)
    public func countDrop(_ reason: DropReason) { dropCounts[reason.rawValue] &+= 1 }

    public func drops(_ reason: DropReason) -> UInt64 { dropCounts[reason.rawValue] }

    public var totalDrops: UInt64 { dropCounts.reduce(0, +) }

    /// A frame this backend had returned `.sent` for is lost after all (see `afterSend`).
    @inline(__always)
    public func countLostAfterSend(_ reason: DropReason, _ n: UInt64 = 1) {
        dropCounts[reason.rawValue] &+= n
        afterSend[reason.rawValue] &+= n
    }

    /// A frame is lost before `receive` could hand it out (see `beforeReceive`).
    @inline(__always)
    public func countLostBeforeReceive(_ reason: DropReason, _ n: UInt64 = 1) {
        dropCounts[reason.rawValue] &+= n
        beforeReceive[reason.rawValue] &+= n
    }

    public func lostAfterSend(_ reason: DropReason) -> UInt64 { afterSend[reason.rawValue] }
    public func lostBeforeReceive(_ reason: DropReason) -> UInt64 { beforeReceive[reason.rawValue] }

    /// Every reason with its count, zeros included, for reports.
    public var dropsByReason: [(DropReason, UInt64)] { DropReason.allCases.map { ($0, dropCounts[$0.rawValue]) } }
}
