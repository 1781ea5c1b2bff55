import CNetBackends

/// Which side of a ring this end plays. netmap's rule: the user side owns the slots
/// `[head, tail)` and moves `head`/`cur`; the kernel side owns `[tail, head)` and moves
/// `tail`, keeping one slot back so that a full ring never looks empty. A netmap port's
/// rings are used from the user side; memory shared between processes needs both.
public enum NetmapRingRole: Sendable {
    case user
    case kernel
}

/// What a peer wrote that made no sense, counted (never trusted, never fatal).
public struct NetmapPeerFaults: Equatable, Sendable {
    /// Updates of the peer's index that were out of range or moved it backwards or past
    /// the slots it may take; the previous value was kept.
    public var invalidIndex: UInt64 = 0
    /// Slots naming a buffer outside the memory or a length beyond the buffer.
    public var invalidSlot: UInt64 = 0
    public init() {}
}

/// One end's view of a ring's indices: the slot it uses next (`position`), what it last
/// published of its own index, and the peer's index as last validated. The peer's index
/// is read once per `refresh` (load-acquire) and accepted only if it moves forward within
/// the slots the peer may hand over; our index is stored with release.
struct NetmapRingIndices {
    let view: NetmapRingView
    let role: NetmapRingRole
    /// A kernel-side consumer releases a slot by moving `tail` to it: its published index
    /// trails its position by one.
    let trails: Bool
    let producing: Bool
    let count: UInt32
    var position: UInt32
    var published: UInt32
    var peer: UInt32
    var faults = NetmapPeerFaults()

    init(view: NetmapRingView, role: NetmapRingRole, producing: Bool) {
        self.view = view
        self.role = role
        self.producing = producing
        count = view.slotCount
        trails = role == .kernel && !producing
        switch role {
        case .user:
            position = view.initialHead
            published = view.initialHead
            peer = view.initialTail
        case .kernel:
            published = view.initialTail
            peer = view.initialHead
            position = trails ? (view.initialTail + 1 == count ? 0 : view.initialTail + 1) : view.initialTail
        }
    }

    /// Slots from `a` forward to `b`.
    @inline(__always)
    func distance(_ a: UInt32, _ b: UInt32) -> UInt32 { b >= a ? b &- a : b &+ count &- a }

    @inline(__always)
    func next(_ i: UInt32) -> UInt32 { i &+ 1 == count ? 0 : i &+ 1 }

    @inline(__always)
    func advanced(_ i: UInt32, by n: UInt32) -> UInt32 {
        let s = i &+ n
        return s >= count ? s &- count : s
    }

    /// Slots this end may use now without hearing from the peer again.
    @inline(__always)
    var available: UInt32 {
        if role == .kernel && producing { return count &- 1 &- distance(peer, position) }
        return distance(position, peer)
    }

    /// Whether our position has been published.
    @inline(__always)
    var isPublished: Bool { published == (trails ? (position == 0 ? count &- 1 : position &- 1) : position) }

    /// Whether the peer may still hand over more slots without our publishing first.
    var peerCanAdd: Bool {
        switch role {
        case .user: return distance(published, peer) < count &- 1
        case .kernel: return distance(peer, published) > 0
        }
    }

    /// Reads the peer's index once and accepts it if it is legal; returns `available`.
    @inline(__always)
    mutating func refresh() -> UInt32 {
        let value: UInt32
        let limit: UInt32
        switch role {
        case .user:
            value = cnb_atomic_load_acquire_u32(view.tailPointer)
            // The kernel may hand over slots up to one short of our published head.
            limit = count &- 1 &- distance(published, peer)
        case .kernel:
            value = cnb_atomic_load_acquire_u32(view.headPointer)
            // The user may release slots up to our published tail.
            limit = distance(peer, published)
        }
        if value != peer {
            if value < count && distance(peer, value) <= limit {
                peer = value
            } else {
                faults.invalidIndex &+= 1
            }
        }
        return available
    }

    /// Stores our position for the peer (release): `head` and `cur` for the user side,
    /// `tail` for the kernel side.
    @inline(__always)
    mutating func publish() {
        switch role {
        case .user:
            published = position
            cnb_atomic_store_release_u32(view.curPointer, position)
            cnb_atomic_store_release_u32(view.headPointer, position)
        case .kernel:
            published = trails ? (position == 0 ? count &- 1 : position &- 1) : position
            cnb_atomic_store_release_u32(view.tailPointer, published)
        }
    }

    /// The slot's buffer index, length and flags in one load (the slot is read once).
    @inline(__always)
    func loadSlot(_ i: UInt32) -> (buffer: UInt32, length: UInt16, flags: UInt16) {
        let word = cnb_atomic_load_relaxed_u64((view.slots + Int(i) &* NetmapLayout.slotSize).assumingMemoryBound(to: UInt64.self))
        return (UInt32(truncatingIfNeeded: word), UInt16(truncatingIfNeeded: word >> 32), UInt16(truncatingIfNeeded: word >> 48))
    }

    /// Writes a slot's length and flags together (its buffer index is left as it is).
    @inline(__always)
    func storeSlot(_ i: UInt32, length: Int, flags: UInt16) {
        let word = UInt32(truncatingIfNeeded: length) | UInt32(flags) << 16
        (view.slots + Int(i) &* NetmapLayout.slotSize + 4).storeBytes(of: word, as: UInt32.self)
    }

    @inline(__always)
    func buffer(_ index: UInt32) -> UnsafeMutableRawPointer { view.buffers + Int(index) &* view.bufferSize }
}
