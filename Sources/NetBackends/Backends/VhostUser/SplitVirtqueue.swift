import CNetBackends
#if canImport(Glibc)
import Glibc
#endif

/// One split virtqueue as the device side sees it (virtio 1.2, 2.7): the guest's descriptor
/// table, available ring and used ring, mapped through `GuestMemory`. Everything read
/// from the guest is checked before use: indices against the ring size, buffers against
/// the memory table, chains bounded in length and in steps (so a loop ends), an indirect
/// table neither nested nor chained. A chain that fails is reported, never followed.
final class SplitVirtqueue {
    static let maximumSize = 32768
    /// Buffers in one chain; a longer one is malformed (Linux's UIO_MAXIOV is 1024).
    static let maximumSegments = 1024

    let index: Int
    private(set) var size = 0
    // Where the rings are in the frontend's address space (SET_VRING_ADDR), kept to map
    // them again under a new memory table.
    private var descUser: UInt64 = 0, availUser: UInt64 = 0, usedUser: UInt64 = 0
    private var desc: UnsafeMutableRawPointer?
    private var avail: UnsafeMutableRawPointer?
    private var used: UnsafeMutableRawPointer?
    private var addressesSet = false

    /// The next available entry to take (SET_VRING_BASE sets it, GET_VRING_BASE reports it).
    var lastAvail: UInt16 = 0
    /// The used index as written so far (published with a release store).
    private(set) var usedIndex: UInt16 = 0
    /// The used index the guest was last told about (EVENT_IDX's old value).
    private var signalled: UInt16 = 0
    var kickFD: Int32 = -1
    var callFD: Int32 = -1
    /// SET_VRING_KICK received since the last stop: the ring runs.
    var started = false
    /// SET_VRING_ENABLE (rings start disabled when protocol features are negotiated).
    var enabled = false
    /// The guest broke the ring's own rules (an index ran ahead by more than the size):
    /// nothing more is taken from it until it is set up again.
    private(set) var broken = false
    var eventIndex = false
    var indirect = false
    /// Notifications from the guest are wanted (flags cleared or avail_event set).
    private var notifyArmed = true

    /// The buffers of the chain last walked.
    let segments: UnsafeMutablePointer<iovec>
    private(set) var segmentCount = 0
    private(set) var chainBytes = 0

    init(index: Int) {
        self.index = index
        segments = .allocate(capacity: Self.maximumSegments)
    }

    deinit {
        segments.deallocate()
        closeDescriptors()
    }

    var isReady: Bool { started && enabled && !broken && desc != nil }

    func closeDescriptors() {
        if kickFD >= 0 { _ = Glibc.close(kickFD); kickFD = -1 }
        if callFD >= 0 { _ = Glibc.close(callFD); callFD = -1 }
    }

    /// Back to the state before any SET_VRING_* (a reset, or the frontend gone).
    func reset() {
        closeDescriptors()
        size = 0
        desc = nil; avail = nil; used = nil
        addressesSet = false
        lastAvail = 0; usedIndex = 0; signalled = 0
        started = false; enabled = false; broken = false
        notifyArmed = true
    }

    /// SET_VRING_NUM: a power of two up to 32768 (virtio 1.2, 2.7).
    func setSize(_ n: Int) -> Bool {
        guard n > 0, n <= Self.maximumSize, n & (n - 1) == 0 else { return false }
        size = n
        return true
    }

    /// SET_VRING_ADDR: the three parts in the frontend's address space.
    func setAddresses(desc d: UInt64, avail a: UInt64, used u: UInt64, memory: GuestMemory) -> String? {
        descUser = d; availUser = a; usedUser = u
        addressesSet = true
        return map(memory)
    }

    /// Maps the rings (again) through `memory`; returns why not, or nil. The used index
    /// restarts from what the ring holds, as after a reconnect the guest's used ring is the truth.
    @discardableResult
    func map(_ memory: GuestMemory) -> String? {
        desc = nil; avail = nil; used = nil
        guard addressesSet else { return nil }
        guard size > 0 else { return "queue \(index): addresses before SET_VRING_NUM" }
        guard descUser & 15 == 0, availUser & 1 == 0, usedUser & 3 == 0 else {
            return "queue \(index): misaligned ring (desc 0x\(String(descUser, radix: 16)), avail 0x\(String(availUser, radix: 16)), used 0x\(String(usedUser, radix: 16)))"
        }
        guard let d = memory.user(descUser, UInt64(16 * size)),
              let a = memory.user(availUser, UInt64(6 + 2 * size)),
              let u = memory.user(usedUser, UInt64(6 + 8 * size)) else {
            return "queue \(index): ring addresses outside the memory table"
        }
        desc = d; avail = a; used = u
        usedIndex = cnb_load_acquire_u16(u + 2)
        signalled = usedIndex
        broken = false
        return nil
    }

    // MARK: available ring

    /// Entries the guest made available and not taken yet (0 when not ready). An index
    /// more than `size` ahead breaks the ring (counted by the caller once).
    @inline(__always)
    func pending() -> Int {
        guard isReady, let avail else { return 0 }
        let n = Int(cnb_load_acquire_u16(avail + 2) &- lastAvail)
        if n > size { broken = true; return 0 }
        return n
    }

    /// The head of the `offset`-th pending entry (bounded by the ring size).
    @inline(__always)
    func head(at offset: Int) -> UInt16 {
        let slot = Int(lastAvail &+ UInt16(truncatingIfNeeded: offset)) & (size - 1)
        return avail!.loadUnaligned(fromByteOffset: 4 + 2 * slot, as: UInt16.self).littleEndian
    }

    /// Walks the chain at `head` into `segments`; every buffer must be device-writable
    /// (`writable`) or device-readable, inside the memory table, the whole at most
    /// `limit` bytes. False for a malformed chain.
    @inline(__always)
    func walk(head: UInt16, writable: Bool, limit: Int, memory: GuestMemory) -> Bool {
        segmentCount = 0
        chainBytes = 0
        guard var table = desc else { return false }
        var tableSize = size
        var i = Int(head)
        var steps = 0
        var inIndirect = false
        while true {
            guard i < tableSize, steps < tableSize else { return false }   // bad index, or a loop
            steps += 1
            let d = table + 16 * i
            let addr = d.loadUnaligned(as: UInt64.self).littleEndian
            let len = Int(d.loadUnaligned(fromByteOffset: 8, as: UInt32.self).littleEndian)
            let flags = d.loadUnaligned(fromByteOffset: 12, as: UInt16.self).littleEndian
            let next = Int(d.loadUnaligned(fromByteOffset: 14, as: UInt16.self).littleEndian)
            if flags & 4 != 0 {   // VIRTQ_DESC_F_INDIRECT
                guard indirect, !inIndirect, flags & 1 == 0, len >= 16, len % 16 == 0, len / 16 <= Self.maximumSize,
                      let t = memory.guest(addr, UInt64(len)) else { return false }
                table = t
                tableSize = len / 16
                i = 0
                steps = 0
                inIndirect = true
                continue
            }
            guard (flags & 2 != 0) == writable else { return false }   // VIRTQ_DESC_F_WRITE
            if len > 0 {
                guard segmentCount < Self.maximumSegments, len <= limit - chainBytes,
                      let p = memory.guest(addr, UInt64(len)) else { return false }
                segments[segmentCount] = iovec(iov_base: p, iov_len: len)
                segmentCount += 1
                chainBytes += len
            }
            if flags & 1 == 0 { return true }   // VIRTQ_DESC_F_NEXT
            i = next
        }
    }

    // MARK: used ring

    /// Writes one used element (not yet visible: see `publish`).
    @inline(__always)
    func addUsed(id: UInt16, length: Int) {
        let slot = Int(usedIndex) & (size - 1)
        let e = used! + 4 + 8 * slot
        e.storeBytes(of: UInt32(id).littleEndian, as: UInt32.self)
        e.storeBytes(of: UInt32(truncatingIfNeeded: length).littleEndian, toByteOffset: 4, as: UInt32.self)
        usedIndex &+= 1
    }

    /// Makes the used elements written so far visible: the elements before the index.
    @inline(__always)
    func publish(taken: Int) {
        lastAvail &+= UInt16(truncatingIfNeeded: taken)
        cnb_store_release_u16(used! + 2, usedIndex.littleEndian)
    }

    /// Whether the guest wants an interrupt for what was used since the last one
    /// (EVENT_IDX's used_event, else VRING_AVAIL_F_NO_INTERRUPT); writes the call eventfd.
    func signalIfNeeded() {
        guard usedIndex != signalled, let avail, callFD >= 0 else { return }
        cnb_fence_full()
        let need: Bool
        if eventIndex {
            let event = cnb_load_relaxed_u16(avail + 4 + 2 * size).littleEndian
            need = UInt16(usedIndex &- event &- 1) < UInt16(usedIndex &- signalled)
        } else {
            need = cnb_load_relaxed_u16(avail).littleEndian & 1 == 0
        }
        signalled = usedIndex
        if need {
            var one: UInt64 = 1
            _ = Glibc.write(callFD, &one, 8)
        }
    }

    // MARK: notifications from the guest

    /// Asks the guest to kick when it makes the next entry available, then looks again
    /// (the guest may have added one before it saw the request): true when entries wait.
    /// With EVENT_IDX the event is the available index as seen now, not `lastAvail`: a
    /// receive that waits for more buffers than those already there must hear of the next.
    @inline(__always)
    func armNotify() -> Bool {
        guard let used, let avail else { return false }
        if eventIndex {
            cnb_store_relaxed_u16(used + 4 + 8 * size, cnb_load_acquire_u16(avail + 2))
        } else {
            cnb_store_relaxed_u16(used, 0)
        }
        notifyArmed = true
        cnb_fence_full()
        return pending() > 0
    }

    /// Busy: no kicks needed (VRING_USED_F_NO_NOTIFY; with EVENT_IDX the old avail_event
    /// is already behind, so the guest does not kick until it is moved again).
    @inline(__always)
    func quiet() {
        guard notifyArmed, let used else { return }
        notifyArmed = false
        if !eventIndex { cnb_store_relaxed_u16(used, UInt16(1).littleEndian) }
    }
}
