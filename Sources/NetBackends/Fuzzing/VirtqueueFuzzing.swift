import CNetBackends
#if canImport(Glibc)
import Glibc
#endif

/// Fuzzing entry point (Fuzz/, `@_spi(Fuzzing)`): a guest's split virtqueue as the
/// vhost-user server reads it. The input is the guest: its first 8 bytes choose the ring
/// size, the ring addresses and the feature bits (INDIRECT_DESC, EVENT_IDX), the rest is
/// written over 64 KiB of guest memory (a memfd mapped once, as SET_MEM_TABLE maps one).
/// Every pending chain is walked both ways (device-readable, device-writable) and used,
/// and every buffer a walk returns must lie inside guest memory, the chain within its
/// limit and its segment bound: what `SplitVirtqueue` promises before a frame is copied.
@_spi(Fuzzing) public enum VirtqueueFuzzing {
    static let memorySize = 1 << 16
    static let guestBase: UInt64 = 0x1_0000_0000
    static let userBase: UInt64 = 0x7f00_0000_0000

    /// The guest memory, mapped once per process (a memfd per input would only be slower).
    nonisolated(unsafe) static let memory: (GuestMemory, UnsafeMutableRawPointer) = {
        let fd = cnb_memfd_create("netbe-fuzz-guest")
        precondition(fd >= 0 && ftruncate(fd, off_t(memorySize)) == 0, "memfd for the fuzzed guest memory")
        let m = GuestMemory()
        do { try m.add(guestAddress: guestBase, size: UInt64(memorySize), userAddress: userBase, offset: 0, fd: fd, device: "fuzz") } catch {
            fatalError("\(error)")
        }
        return (m, m.guest(guestBase, UInt64(memorySize))!)
    }()

    public static func run(_ data: UnsafeRawBufferPointer) {
        guard data.count >= 8 else { return }
        let (memory, base) = Self.memory
        let image = UnsafeRawBufferPointer(rebasing: data[8...].prefix(memorySize))
        memset(base, 0, memorySize)
        if let source = image.baseAddress { base.copyMemory(from: source, byteCount: image.count) }
        let q = SplitVirtqueue(index: 0)
        let size = 1 << Int(data[0] & 7)   // 1 ... 128
        guard q.setSize(size) else { fuzzCheck(false, "ring size \(size) refused"); return }
        // Ring addresses: anywhere in (and a little past) the memory, 16-byte steps.
        func address(_ b: UInt8) -> UInt64 { userBase + UInt64(b) * 272 }
        q.indirect = data[4] & 1 != 0
        q.eventIndex = data[4] & 2 != 0
        guard q.setAddresses(desc: address(data[1]), avail: address(data[2]) & ~1, used: address(data[3]) & ~3, memory: memory) == nil else { return }
        q.started = true
        q.enabled = true
        q.lastAvail = UInt16(data[5]) | UInt16(data[6]) << 8
        let limit = 1 + Int(data[7]) * 512
        let low = UInt(bitPattern: base), high = low + UInt(memorySize)
        var rounds = 0
        while rounds < 4 {
            let n = q.pending()
            guard n > 0 else { break }
            fuzzCheck(n <= size, "\(n) pending entries in a ring of \(size)")
            for k in 0..<n {
                let head = q.head(at: k)
                for writable in [false, true] where q.walk(head: head, writable: writable, limit: limit, memory: memory) {
                    fuzzCheck(q.segmentCount <= SplitVirtqueue.maximumSegments && q.chainBytes <= limit, "chain over its bounds")
                    var total = 0
                    for s in 0..<q.segmentCount {
                        let v = q.segments[s]
                        let start = UInt(bitPattern: v.iov_base)
                        fuzzCheck(start >= low && v.iov_len <= high - start, "a buffer outside guest memory")
                        total += v.iov_len
                    }
                    fuzzCheck(total == q.chainBytes, "segments and chain length disagree")
                }
                q.addUsed(id: head, length: 0)
            }
            q.publish(taken: n)
            _ = q.armNotify()
            q.quiet()
            rounds += 1
        }
    }
}
