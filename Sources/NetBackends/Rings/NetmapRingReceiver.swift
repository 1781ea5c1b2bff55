#if canImport(Glibc)
import Glibc
#endif

/// Reads frames out of a ring's filled slots: an RX ring from the user side (a netmap
/// port), a TX ring from the kernel side (a switch draining a port over shared memory).
///
/// One frame is its run of `NS_MOREFRAG` slots and the slot that ends it, gathered into
/// the caller's iovecs. Every slot is read once (index, length and flags in one load) and
/// checked: a buffer outside the memory or a length beyond the buffer makes the frame
/// malformed, and more than NETMAP_MAX_FRAGS slots too; such a frame, and one the
/// caller's list is too short for, is consumed and reported dropped, never half-delivered.
/// A frame whose end the peer has not handed over yet stays where it is. Slots go back to
/// the peer at `release()`. Nothing is allocated per frame. Use from one thread.
public final class NetmapRingReceiver: @unchecked Sendable {
    @exclusivity(unchecked) var indices: NetmapRingIndices
    /// Frames consumed since the last `release()`.
    @exclusivity(unchecked) public private(set) var unreleasedFrames = 0
    /// Set after a frame of too many fragments: its remaining slots are skipped.
    @exclusivity(unchecked) private var skippingRest = false
    public let maximumFragments: Int

    public init(_ view: NetmapRingView, role: NetmapRingRole = .user, maximumFragments: Int = NetmapLayout.maximumFragments) {
        indices = NetmapRingIndices(view: view, role: role, producing: false)
        self.maximumFragments = maximumFragments
    }

    public var view: NetmapRingView { indices.view }
    public var faults: NetmapPeerFaults { indices.faults }
    /// Filled slots as last seen (`refresh()` looks again).
    public var filledSlots: Int { Int(indices.available) }

    /// Reads the peer's index once more; returns the filled slots.
    @discardableResult
    public func refresh() -> Int { Int(indices.refresh()) }

    /// Hands every consumed slot back to the peer (one release store); false when there
    /// was nothing to hand back.
    @discardableResult
    public func release() -> Bool {
        guard !indices.isPublished else { return false }
        indices.publish()
        unreleasedFrames = 0
        return true
    }

    /// One frame into `buffers`: `.frame(length:)`, `.dropped(length:reason:)` with
    /// `.noSpace` (list too short) or `.malformed`, or `.empty` when no whole frame waits
    /// (after looking at the peer's index once more).
    public func receive(into buffers: UnsafeBufferPointer<iovec>) -> ReceiveResult {
        var available = Int(indices.available)
        if available == 0 {
            available = Int(indices.refresh())
            if available == 0 { return .empty }
        }
        if skippingRest {
            skipRest(&available)
            if available == 0 { return .empty }
        }
        let size = indices.view.bufferSize
        let bufferCount = indices.view.bufferCount
        var slot = indices.position
        // The common case: a one-slot frame into a first iovec that holds it.
        let first = indices.loadSlot(slot)
        if first.flags & NetmapLayout.moreFragments == 0, first.buffer < bufferCount, Int(first.length) <= size,
           first.length > 0, let base = buffers.first?.iov_base, buffers[0].iov_len >= Int(first.length) {
            base.copyMemory(from: indices.buffer(first.buffer), byteCount: Int(first.length))
            indices.position = indices.next(slot)
            unreleasedFrames &+= 1
            return .frame(length: Int(first.length))
        }
        var used = 0
        var total = 0
        var bad = false
        var fits = true
        var part = 0
        var destination = UnsafeMutableRawPointer(bitPattern: 1)!
        var room = 0
        while true {
            if used == available {
                // The frame goes on past what the peer has handed over.
                let more = Int(indices.refresh())
                if more > available { available = more; continue }
                if !indices.isPublished {
                    // The peer may be waiting for the slots we hold: give them back first.
                    release()
                    return .empty
                }
                if indices.peerCanAdd { return .empty }
                // The ring is full of one unfinished frame: it can never end.
                indices.position = slot
                unreleasedFrames &+= 1
                skippingRest = true
                return .dropped(length: total, reason: .malformed)
            }
            if used == maximumFragments {
                indices.position = slot
                unreleasedFrames &+= 1
                skippingRest = true
                return .dropped(length: total, reason: .malformed)
            }
            let s = indices.loadSlot(slot)
            used &+= 1
            slot = indices.next(slot)
            let length = Int(s.length)
            total &+= length
            if s.buffer >= bufferCount || length > size {
                if !bad { indices.faults.invalidSlot &+= 1 }
                bad = true
            } else if fits && !bad {
                var source = UnsafeRawPointer(indices.buffer(s.buffer))
                var left = length
                while left > 0 {
                    if room == 0 {
                        guard part < buffers.count else { fits = false; break }
                        let v = buffers[part]
                        part &+= 1
                        guard let base = v.iov_base else { continue }
                        destination = base
                        room = v.iov_len
                        continue
                    }
                    let n = left < room ? left : room
                    destination.copyMemory(from: source, byteCount: n)
                    source += n
                    destination += n
                    left &-= n
                    room &-= n
                }
            }
            if s.flags & NetmapLayout.moreFragments == 0 { break }
        }
        indices.position = slot
        unreleasedFrames &+= 1
        if bad || total == 0 { return .dropped(length: total, reason: .malformed) }
        if !fits { return .dropped(length: total, reason: .noSpace) }
        return .frame(length: total)
    }

    /// The length of the next whole frame, 0 when none waits; nothing is consumed.
    public func peekLength() -> Int {
        var available = Int(indices.available)
        if available == 0 { available = Int(indices.refresh()) }
        var slot = indices.position
        var total = 0
        var used = 0
        if skippingRest {
            // The rest of an over-long frame is not a frame.
            while used < available {
                let s = indices.loadSlot(slot)
                used &+= 1
                slot = indices.next(slot)
                if s.flags & NetmapLayout.moreFragments == 0 { break }
            }
        }
        var fragments = 0
        while used < available && fragments < maximumFragments {
            let s = indices.loadSlot(slot)
            used &+= 1
            fragments &+= 1
            slot = indices.next(slot)
            total &+= Int(s.length)
            if s.flags & NetmapLayout.moreFragments == 0 { return total }
        }
        return 0
    }

    /// Consumes the remaining slots of a frame already reported malformed.
    private func skipRest(_ available: inout Int) {
        var slot = indices.position
        while available > 0 {
            let s = indices.loadSlot(slot)
            slot = indices.next(slot)
            available &-= 1
            if s.flags & NetmapLayout.moreFragments == 0 { skippingRest = false; break }
        }
        indices.position = slot
    }
}
