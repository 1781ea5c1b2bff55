import CNetBackends
#if canImport(Glibc)
import Glibc
#endif

/// The frontend's memory table (SET_MEM_TABLE): each region mapped from the descriptor it
/// came with. Guest-physical addresses (descriptors) and the frontend's own virtual
/// addresses (SET_VRING_ADDR) are translated only when the whole range lies inside one
/// region, so nothing a guest names can reach outside what is mapped. Each mapping is
/// guarded against SIGBUS (`cnb_sigbus_guard_add`): a frontend that truncates its file
/// after the table was checked turns our next access into zeros and `faulted`, not a crash.
final class GuestMemory {
    struct Region {
        let guestAddress: UInt64
        let size: UInt64
        let userAddress: UInt64
        /// The region's first byte (the mapping plus the region's offset).
        let base: UnsafeMutableRawPointer
        let mapping: UnsafeMutableRawPointer
        let mappingLength: Int
        let guardSlot: Int32
    }

    private(set) var regions: [Region] = []
    /// The region last hit: consecutive buffers almost always share one.
    private var last = 0

    deinit { unmapAll() }

    var isEmpty: Bool { regions.isEmpty }

    /// A region's file was truncated under us: what was read from it may be zeros.
    var faulted: Bool {
        for r in regions where cnb_sigbus_guard_faulted(r.guardSlot) != 0 { return true }
        return false
    }

    func unmapAll() {
        for r in regions {
            cnb_sigbus_guard_remove(r.guardSlot)
            munmap(r.mapping, r.mappingLength)
        }
        regions.removeAll()
        last = 0
    }

    /// Maps one region from `fd` (which it does not close). The file must hold
    /// offset + size bytes, so that no access past its end can raise SIGBUS.
    func add(guestAddress: UInt64, size: UInt64, userAddress: UInt64, offset: UInt64, fd: Int32, device: String) throws(NetBackendError) {
        func bad(_ why: String) -> NetBackendError { .invalidArgument("\(device): memory region at guest 0x\(String(guestAddress, radix: 16)): \(why)") }
        guard size > 0, size <= UInt64(Int.max / 2), offset <= UInt64(Int.max / 2) else { throw bad("size \(size) or offset \(offset) out of range") }
        guard guestAddress <= UInt64.max - size, userAddress <= UInt64.max - size else { throw bad("wraps around the address space") }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .system(SystemCallError(call: "fstat", device: device, errno: errno)) }
        let length = Int(offset + size)
        guard (st.st_mode & S_IFMT) != S_IFREG || Int(st.st_size) >= length else {
            throw bad("its file holds \(st.st_size) bytes, fewer than offset + size (\(length))")
        }
        // Mapped from offset 0 and the offset added afterwards: mmap needs a page-aligned offset.
        let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let p, p != MAP_FAILED else { throw .system(SystemCallError(call: "mmap", device: device, errno: errno)) }
        let slot = cnb_sigbus_guard_add(p, length)
        guard slot >= 0 else {
            let e = errno
            munmap(p, length)
            throw .system(SystemCallError(call: "SIGBUS guard for a memory region", device: device, errno: e))
        }
        regions.append(Region(guestAddress: guestAddress, size: size, userAddress: userAddress,
                              base: p + Int(offset), mapping: p, mappingLength: length, guardSlot: slot))
    }

    /// Host address of guest-physical [address, address + length), or nil.
    @inline(__always)
    func guest(_ address: UInt64, _ length: UInt64) -> UnsafeMutableRawPointer? {
        if last < regions.count, let p = Self.inside(regions[last], address, length, regions[last].guestAddress) { return p }
        for i in regions.indices {
            if let p = Self.inside(regions[i], address, length, regions[i].guestAddress) { last = i; return p }
        }
        return nil
    }

    /// Host address of the frontend's virtual [address, address + length), or nil.
    func user(_ address: UInt64, _ length: UInt64) -> UnsafeMutableRawPointer? {
        for r in regions {
            if let p = Self.inside(r, address, length, r.userAddress) { return p }
        }
        return nil
    }

    @inline(__always)
    private static func inside(_ r: Region, _ address: UInt64, _ length: UInt64, _ start: UInt64) -> UnsafeMutableRawPointer? {
        guard address >= start, length <= r.size, address - start <= r.size - length else { return nil }
        return r.base + Int(address - start)
    }
}
