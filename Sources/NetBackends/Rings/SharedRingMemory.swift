import CNetBackends
#if canImport(Glibc)
import Glibc
#endif

/// A memfd mapped shared: memory for netmap-format rings between processes. The side
/// that creates it sizes and seals it (no shrinking, no growing), so that the side that
/// attaches, which checks the seal, can never be made to touch a page that has gone
/// (SIGBUS). Unmapped and closed on deinit.
public final class SharedRingMemory: @unchecked Sendable {
    public let fd: Int32
    public let memory: NetmapRingMemory

    private init(fd: Int32, memory: NetmapRingMemory) {
        self.fd = fd
        self.memory = memory
    }

    deinit {
        munmap(memory.base, memory.size)
        Glibc.close(fd)
    }

    /// A new sealed memfd of `size` bytes (zeroed), mapped.
    public static func create(name: String, size: Int) throws(NetBackendError) -> SharedRingMemory {
        let device = "memfd \(name)"
        let fd = cnb_memfd_create(name)
        guard fd >= 0 else { throw .system(SystemCallError(call: "memfd_create", device: device, errno: errno)) }
        do throws(SystemCallError) {
            try Syscall.check("ftruncate", device: device) { ftruncate(fd, off_t(size)) }
            try Syscall.check("fcntl F_ADD_SEALS", device: device) { cnb_memfd_seal_size(fd) }
            return SharedRingMemory(fd: fd, memory: try map(fd, size: size, device: device))
        } catch {
            Glibc.close(fd)
            throw .system(error)
        }
    }

    /// Maps a memfd received from the side that created it; takes ownership of `fd`
    /// (closed on failure too). Refuses one whose size is not sealed.
    public static func attach(fd: Int32) throws(NetBackendError) -> SharedRingMemory {
        let device = "memfd fd \(fd)"
        let sealed: Int32
        let size: Int
        do throws(SystemCallError) {
            sealed = try Syscall.check("fcntl F_GET_SEALS", device: device) { cnb_memfd_size_is_sealed(fd) }
            var st = stat()
            try Syscall.check("fstat", device: device) { fstat(fd, &st) }
            size = Int(st.st_size)
        } catch {
            Glibc.close(fd)
            throw .system(error)
        }
        guard sealed == 1 else {
            Glibc.close(fd)
            throw .invalidArgument("\(device): the shared ring memory is not sealed against shrinking")
        }
        do throws(SystemCallError) {
            return SharedRingMemory(fd: fd, memory: try map(fd, size: size, device: device))
        } catch {
            Glibc.close(fd)
            throw .system(error)
        }
    }

    private static func map(_ fd: Int32, size: Int, device: String) throws(SystemCallError) -> NetmapRingMemory {
        guard size > 0 else { throw SystemCallError(call: "mmap (empty memfd)", device: device, errno: EINVAL) }
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let p, p != MAP_FAILED else { throw SystemCallError(call: "mmap", device: device, errno: errno) }
        return NetmapRingMemory(base: p, size: size)
    }
}
