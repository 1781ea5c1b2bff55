import CNetBackends
#if canImport(Glibc)
import Glibc
#endif

/// One port registered with the netmap kernel module through today's API (NIOCCTRL,
/// NETMAP_API 14): `/dev/netmap` opened, NETMAP_REQ_REGISTER for all of the port's NIC
/// rings, the shared memory mapped and every ring wrapped from the user side. Written
/// against netmap's published headers (see cnb_netmap.h); not run against a netmap
/// kernel on the machines this was developed on, which have no `/dev/netmap`.
final class NetmapPort: NetmapPortDriver {
    static let devicePath = "/dev/netmap"
    static var deviceExists: Bool { access(devicePath, F_OK) == 0 }

    /// The name the kernel knows: `em0` for `netmap:em0`, `vale0:1` for a VALE port.
    let portName: String
    let fd: Int32
    let memory: NetmapRingMemory
    let transmit: [NetmapRingSender]
    let receive: [NetmapRingReceiver]
    private(set) var headerLengths: [Int] = [0]
    var signalsRoomOnRead: Bool { false }

    /// `label` names the port in messages (the spec's name, e.g. `netmap:em0`).
    init(portName: String, label: String) throws(NetBackendError) {
        self.portName = portName
        let fd = open(Self.devicePath, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else {
            let e = errno
            if e == ENOENT || e == ENXIO || e == ENODEV {
                throw .unavailable("\(label): no \(Self.devicePath) on this host (the netmap kernel module is not loaded)")
            }
            throw .system(SystemCallError(call: "open \(Self.devicePath)", device: portName, errno: e))
        }
        var registration = cnb_nmreq_register()
        registration.nr_mode = UInt32(cnb_NR_REG_ALL_NIC)
        // Transmission is started by NIOCTXSYNC at the end of each batch, not by poll.
        registration.nr_flags = UInt64(cnb_NR_NO_TX_POLL)
        var mapped: UnsafeMutableRawPointer?
        do throws(NetBackendError) {
            do throws(SystemCallError) {
                try Self.request(fd, portName, type: cnb_NETMAP_REQ_REGISTER, name: "NIOCCTRL REGISTER", body: &registration)
            } catch {
                throw .system(error)
            }
            let size = Int(registration.nr_memsize)
            guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
                throw .system(SystemCallError(call: "mmap \(Self.devicePath)", device: portName, errno: errno))
            }
            mapped = p
            memory = NetmapRingMemory(base: p, size: size)
            let layout: NetmapInterfaceLayout
            do { layout = try memory.interface(at: Int(registration.nr_offset)) } catch {
                throw .deviceGone("\(portName): the kernel's netmap_if makes no sense: \(error)")
            }
            guard !layout.transmit.isEmpty, !layout.receive.isEmpty else {
                throw .deviceGone("\(portName): the port has \(layout.transmit.count) TX and \(layout.receive.count) RX rings")
            }
            transmit = layout.transmit.map { NetmapRingSender($0) }
            receive = layout.receive.map { NetmapRingReceiver($0) }
        } catch {
            if let mapped { munmap(mapped, Int(registration.nr_memsize)) }
            Glibc.close(fd)
            throw error
        }
        self.fd = fd
        headerLengths = probeHeaderLengths()
    }

    /// As the seed's netmap_get_cap: a port that takes a 12-byte header carries 0, 10 and
    /// 12 (VALE ports); one that does not (a NIC), none. Its own length is put back.
    private func probeHeaderLengths() -> [Int] {
        guard let previous = try? headerLength() else { return [0] }
        guard (try? requestHeaderLength(VirtioNetHeader.mergeableLength)) != nil else { return [0] }
        try? requestHeaderLength(previous)
        return [0, 10, 12]
    }

    func close() {
        munmap(memory.base, memory.size)
        Glibc.close(fd)
    }

    func rearm() {}

    func acknowledge() {}

    func setHeaderLength(_ length: Int) throws(NetBackendError) {
        do { try requestHeaderLength(length) } catch { throw .system(error) }
    }

    /// The port's virtio-net header length (NETMAP_REQ_PORT_HDR_GET; VALE ports only).
    func headerLength() throws(SystemCallError) -> Int {
        var body = cnb_nmreq_port_hdr()
        try Self.request(fd, portName, type: cnb_NETMAP_REQ_PORT_HDR_GET, name: "NIOCCTRL PORT_HDR_GET", body: &body)
        return Int(body.nr_hdr_len)
    }

    /// Sets the port's virtio-net header length, 0, 10 or 12 (NETMAP_REQ_PORT_HDR_SET).
    func requestHeaderLength(_ length: Int) throws(SystemCallError) {
        var body = cnb_nmreq_port_hdr(nr_hdr_len: UInt32(length), pad1: 0)
        try Self.request(fd, portName, type: cnb_NETMAP_REQ_PORT_HDR_SET, name: "NIOCCTRL PORT_HDR_SET", body: &body)
    }

    func transmitSync() throws(NetBackendError) {
        do { try Syscall.ioctl(fd, "NIOCTXSYNC", cnb_NIOCTXSYNC, value: 0, device: portName) } catch { throw .system(error) }
    }

    func receiveSync() throws(NetBackendError) {
        do { try Syscall.ioctl(fd, "NIOCRXSYNC", cnb_NIOCRXSYNC, value: 0, device: portName) } catch { throw .system(error) }
    }

    /// One NIOCCTRL request: the header names the port and points at `body`.
    private static func request<Body>(_ fd: Int32, _ port: String, type: Int32, name: String, body: inout Body) throws(SystemCallError) {
        var header = cnb_nmreq_header()
        header.nr_version = UInt16(cnb_NETMAP_API)
        header.nr_reqtype = UInt16(type)
        withUnsafeMutableBytes(of: &header.nr_name) { dst in
            for (i, byte) in port.utf8.prefix(dst.count - 1).enumerated() { dst[i] = byte }
        }
        try withUnsafeMutablePointer(to: &body) { (p) throws(SystemCallError) in
            header.nr_body = UInt64(UInt(bitPattern: p))
            try Syscall.ioctl(fd, name, cnb_NIOCCTRL, &header, device: port)
        }
    }
}
