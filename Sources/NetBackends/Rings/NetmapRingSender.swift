#if canImport(Glibc)
import Glibc
#endif

/// What became of a frame handed to `NetmapRingSender.send`. Only `.queued` advanced
/// the ring; every other outcome left it as it was (the frame is dropped whole).
public enum NetmapSendOutcome: Equatable, Sendable {
    /// Written into `slots` slots; visible to the peer after `publish()`.
    case queued(slots: Int)
    /// The ring has too few free slots now (it filled before or in the middle of the frame).
    case noSpace
    /// The frame can never fit: empty, or more than NETMAP_MAX_FRAGS slots (or the
    /// whole ring) at this buffer size.
    case tooLarge
    /// A slot the peer handed over names a buffer outside the memory (counted in `faults`).
    case peerFault

    /// The reason a refused frame is counted under (nil for `.queued` and `.noSpace`):
    /// one mapping for every sender over these rings (a netmap port, both ends of a vale port).
    @inline(__always)
    public var dropReason: DropReason? {
        switch self {
        case .tooLarge: .oversized
        case .peerFault: .malformed
        case .queued, .noSpace: nil
        }
    }
}

/// Writes frames into a ring's free slots: a TX ring from the user side (a netmap port),
/// an RX ring from the kernel side (a switch feeding a port over shared memory).
///
/// A frame is copied from its scatter-gather list into as many slots as it needs, each
/// but the last flagged `NS_MOREFRAG`; the ring's index moves only past whole frames and
/// only at `publish()`, so a frame that does not fit is dropped whole by not advancing.
/// Nothing is allocated per frame. Use from one thread.
public final class NetmapRingSender: @unchecked Sendable {
    @exclusivity(unchecked) var indices: NetmapRingIndices
    /// Frames written since the last `publish()`.
    @exclusivity(unchecked) public private(set) var unpublishedFrames = 0
    /// At most this many slots per frame (NETMAP_MAX_FRAGS, and one short of the ring).
    public let maximumSlotsPerFrame: Int

    public init(_ view: NetmapRingView, role: NetmapRingRole = .user, maximumFragments: Int = NetmapLayout.maximumFragments) {
        indices = NetmapRingIndices(view: view, role: role, producing: true)
        maximumSlotsPerFrame = min(maximumFragments, Int(view.slotCount) - 1)
    }

    public var view: NetmapRingView { indices.view }
    public var faults: NetmapPeerFaults { indices.faults }
    /// Free slots as last seen (`refresh()` looks again).
    public var freeSlots: Int { Int(indices.available) }

    /// Reads the peer's index once more; returns the free slots.
    @discardableResult
    public func refresh() -> Int { Int(indices.refresh()) }

    /// Makes every queued frame visible to the peer (one release store); false when
    /// there was nothing to publish.
    @discardableResult
    public func publish() -> Bool {
        guard unpublishedFrames > 0 else { return false }
        indices.publish()
        unpublishedFrames = 0
        return true
    }

    /// Copies one frame into the ring's free slots (looking at the peer's index again
    /// once if there are too few). The slots a frame needs are counted first, so a frame
    /// that cannot fit is refused before any slot is touched. See `NetmapSendOutcome`.
    public func send(_ frame: UnsafeBufferPointer<iovec>) -> NetmapSendOutcome {
        let size = indices.view.bufferSize
        let length = IOVectors.length(of: frame)
        guard length > 0 else { return .tooLarge }
        if length <= size && frame.count == 1, let base = frame[0].iov_base {
            return sendOneSlot(base, length: length)
        }
        let needed = (length &+ size &- 1) / size
        guard needed <= maximumSlotsPerFrame else { return .tooLarge }
        if needed > Int(indices.available), needed > Int(indices.refresh()) { return .noSpace }
        var slot = indices.position
        var used = 0
        var destination = UnsafeMutableRawPointer(bitPattern: 1)!
        var room = 0
        var filled = 0
        for part in frame {
            guard var source = part.iov_base.map(UnsafeRawPointer.init) else { continue }
            var left = part.iov_len
            while left > 0 {
                if room == 0 {
                    if used > 0 {
                        indices.storeSlot(slot, length: filled, flags: NetmapLayout.moreFragments)
                        slot = indices.next(slot)
                    }
                    let buffer = indices.loadSlot(slot).buffer
                    guard buffer < indices.view.bufferCount else {
                        indices.faults.invalidSlot &+= 1
                        return .peerFault
                    }
                    destination = indices.buffer(buffer)
                    room = size
                    filled = 0
                    used &+= 1
                }
                let n = left < room ? left : room
                destination.copyMemory(from: source, byteCount: n)
                source += n
                destination += n
                left &-= n
                room &-= n
                filled &+= n
            }
        }
        indices.storeSlot(slot, length: filled, flags: 0)
        indices.position = indices.next(slot)
        unpublishedFrames &+= 1
        return .queued(slots: used)
    }

    /// The common case, a frame in one part that fits one buffer, without the general loop.
    @inline(__always)
    private func sendOneSlot(_ source: UnsafeMutableRawPointer, length: Int) -> NetmapSendOutcome {
        if indices.available == 0, indices.refresh() == 0 { return .noSpace }
        let slot = indices.position
        let buffer = indices.loadSlot(slot).buffer
        guard buffer < indices.view.bufferCount else {
            indices.faults.invalidSlot &+= 1
            return .peerFault
        }
        indices.buffer(buffer).copyMemory(from: source, byteCount: length)
        indices.storeSlot(slot, length: length, flags: 0)
        indices.position = indices.next(slot)
        unpublishedFrames &+= 1
        return .queued(slots: 1)
    }
}
