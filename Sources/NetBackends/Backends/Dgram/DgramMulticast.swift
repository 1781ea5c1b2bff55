#if canImport(Glibc)
import Glibc
#endif

/// A UDP multicast hub (QEMU's `-netdev dgram,remote.type=inet` with a group address):
/// every member binds the group's port with SO_REUSEADDR and joins the group
/// (IP_ADD_MEMBERSHIP, ip(7)), with loopback on so that members on one host hear each
/// other. Frames leave through a second socket connected to the group, whose address
/// (picked by the kernel) is unique to this member: frames from it that come back
/// looped are our own and are skipped.
extension DgramBackend {
    static func isMulticast(_ host: String) -> Bool {
        var a = in_addr()
        guard inet_pton(AF_INET, host, &a) == 1 else { return false }
        return (UInt32(bigEndian: a.s_addr) >> 28) == 0xE   // 224.0.0.0/4
    }

    func openMulticast() throws(NetBackendError) {
        guard case .udp(let group, let port)? = remote else { return }
        let device = remote!.description
        var localIP = in_addr(s_addr: 0)   // INADDR_ANY: the kernel picks the interface
        if case .udp(let host, _)? = local {
            guard inet_pton(AF_INET, host, &localIP) == 1 else {
                throw .badSpec("bad spec '\(spec.text)': local= of a multicast hub must be an IPv4 address (the interface to use)")
            }
        }
        let groupAddress = try remote!.resolve()
        let groupPort = try NetSocketAddress.udp(host: group, port: port).resolve()
        do throws(SystemCallError) {
            fd = try SocketCall.make(family: AF_INET, type: SocketCall.datagram, device: device)
            try SocketCall.setInt(fd, SOL_SOCKET, SO_REUSEADDR, 1, call: "SO_REUSEADDR", device: device)
            // Bound to the group itself, the socket gets only the group's datagrams.
            try SocketCall.bind(fd, groupPort, device: device)
            var request = ip_mreq(imr_multiaddr: in_addr(), imr_interface: localIP)
            inet_pton(AF_INET, group, &request.imr_multiaddr)
            try Syscall.check("setsockopt IP_ADD_MEMBERSHIP", device: device) {
                setsockopt(fd, Int32(IPPROTO_IP), IP_ADD_MEMBERSHIP, &request, socklen_t(MemoryLayout<ip_mreq>.size))
            }
            sendFD = try SocketCall.make(family: AF_INET, type: SocketCall.datagram, device: device)
            try SocketCall.setInt(sendFD, Int32(IPPROTO_IP), IP_MULTICAST_LOOP, 1, call: "IP_MULTICAST_LOOP", device: device)
            if localIP.s_addr != 0 {
                try Syscall.check("setsockopt IP_MULTICAST_IF", device: device) {
                    setsockopt(sendFD, Int32(IPPROTO_IP), IP_MULTICAST_IF, &localIP, socklen_t(MemoryLayout<in_addr>.size))
                }
            }
            try Syscall.check("connect", device: device) { groupAddress.withSockaddr { Glibc.connect(sendFD, $0, $1) } }
            ownAddress = try SocketCall.localAddress(sendFD, device: device)
        } catch {
            throw .system(error)
        }
        log.info("\(name): joined multicast group, sending from \(ownAddress!)")
    }
}
