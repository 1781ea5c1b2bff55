#if canImport(Glibc)
import Glibc
#endif

/// Writes frames (without virtio-net header) as a classic pcap file, linktype Ethernet
/// (pcap-savefile(5)). Buffered: one write(2) per MiB; `flush` on a timer and at exit.
public final class PcapWriter: @unchecked Sendable {
    public let path: String
    private var fd: Int32
    private let capacity = 1 << 20
    private let buffer: UnsafeMutableRawPointer
    private var used = 0
    public private(set) var frames: UInt64 = 0

    public init(path: String) throws(NetBackendError) {
        self.path = path
        do {
            fd = try Syscall.check("open", device: path) { Glibc.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        } catch {
            throw .system(error)
        }
        buffer = .allocate(byteCount: capacity, alignment: 16)
        // Global header: magic, version 2.4, thiszone 0, sigfigs 0, snaplen, LINKTYPE_ETHERNET.
        var header = [UInt8](repeating: 0, count: 24)
        func put32(_ v: UInt32, _ at: Int) { for i in 0..<4 { header[at + i] = UInt8((v >> (8 * UInt32(i))) & 0xff) } }
        put32(0xa1b2c3d4, 0)
        header[4] = 2; header[6] = 4
        put32(262144, 16)
        put32(1, 20)
        header.withUnsafeBytes { append($0.baseAddress!, $0.count) }
    }

    deinit {
        close()
        buffer.deallocate()
    }

    private func append(_ p: UnsafeRawPointer, _ n: Int) {
        if used + n > capacity { flush() }
        if n > capacity {
            _ = Glibc.write(fd, p, n)
            return
        }
        (buffer + used).copyMemory(from: p, byteCount: n)
        used += n
    }

    /// Appends one frame with the current time.
    public func record(_ frame: UnsafeRawBufferPointer) {
        guard fd >= 0 else { return }
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var rec: (UInt32, UInt32, UInt32, UInt32) = (UInt32(truncatingIfNeeded: ts.tv_sec).littleEndian,
                                                     UInt32(ts.tv_nsec / 1000).littleEndian,
                                                     UInt32(frame.count).littleEndian, UInt32(frame.count).littleEndian)
        if used + 16 + frame.count > capacity { flush() }
        withUnsafeBytes(of: &rec) { append($0.baseAddress!, 16) }
        append(frame.baseAddress!, frame.count)
        frames &+= 1
    }

    public func flush() {
        var off = 0
        while off < used {
            // A capture that cannot be written (disk full) loses frames, not the relay.
            guard case .processed(let n)? = try? Syscall.write(fd, buffer + off, used - off, device: path), n > 0 else { break }
            off += n
        }
        used = 0
    }

    public func close() {
        guard fd >= 0 else { return }
        flush()
        _ = Glibc.close(fd)
        fd = -1
    }
}
