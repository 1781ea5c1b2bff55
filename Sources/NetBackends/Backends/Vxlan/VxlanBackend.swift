import CNetBackends
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Ethernet frames in VXLAN (RFC 7348) over one UDP socket, so that the kernel routes the
/// outer packets: this side is a VTEP that the Linux vxlan device, Open vSwitch or a
/// hardware VTEP with the same VNI talk to. Several `remote=` get head-end replication and
/// learned unicast (VxlanForwardingTable); a multicast `remote=` is joined.
///
/// With UDP GSO (`gso=on`) it offers checksum offload and TSO (`tso=on`, the defaults):
/// a TSO frame is cut here straight into the UDP GSO buffer, each segment its own
/// datagram with its own VXLAN and inner headers (VxlanSendOffload), since every VXLAN
/// datagram must fit the underlay. The guest's MTU should be the underlay path's less 50
/// bytes (70 with IPv6 outside); netbe logs that figure. A larger frame still goes,
/// fragmented by the kernel (DF is not set, as Linux vxlan's default `df unset`).
public final class VxlanBackend: NetBackend, @unchecked Sendable {
    public static let kind = BackendKind(
        name: "vxlan", prefixes: ["vxlan"],
        summary: "Ethernet in VXLAN over UDP (RFC 7348): Linux vxlan, Open vSwitch, hardware VTEPs",
        open: { (spec, loop) throws(NetBackendError) in try VxlanBackend(spec: spec, eventLoop: loop) }
    )

    let config: VxlanConfiguration
    var table: VxlanForwardingTable
    var log: Logger { logger }
    var fd: Int32 = -1
    var source: EventSource?
    var receiveEnabled = false
    var senderWaiting = false
    /// The port frames are sent to on a learned peer: the first remote's.
    let peerPort: UInt16

    // Preallocated: the outgoing header, the iovec arrays that put it before the frame,
    // the incoming header, the sender's address, and a scratch for a split MAC.
    let sendHeader = UnsafeMutablePointer<UInt8>.allocate(capacity: VxlanHeader.length)
    let receiveHeader = UnsafeMutablePointer<UInt8>.allocate(capacity: VxlanHeader.length)
    let sendVector = UnsafeMutablePointer<iovec>.allocate(capacity: VxlanBackend.vectorCapacity)
    let receiveVector = UnsafeMutablePointer<iovec>.allocate(capacity: VxlanBackend.vectorCapacity)
    let sender = UnsafeMutableRawPointer.allocate(byteCount: MemoryLayout<sockaddr_storage>.size, alignment: 16)
    let peerStorage = UnsafeMutableRawPointer.allocate(byteCount: MemoryLayout<sockaddr_storage>.size, alignment: 16)
    let macScratch = UnsafeMutablePointer<UInt8>.allocate(capacity: 32)
    /// UDP GSO (`gso=on`, the default); nil when off.
    var batch: VxlanSendBatch?
    /// A sendmsg of the batch would block: nothing more is tried until writable.
    var batchBlocked = false
    /// A frame with a virtio-net header that came in pieces, put together (TSO only).
    let frameScratch = UnsafeMutableRawPointer.allocate(byteCount: VxlanBackend.scratchCapacity, alignment: 64)
    static let scratchCapacity = maximumFrameLength + VirtioNetHeader.mergeableLength + 64
    /// Zeros: the virtio-net header put before each received frame (no offload asked).
    let zeroHeader = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 16)
    let batchVector = UnsafeMutablePointer<iovec>.allocate(capacity: 1)
    /// UDP GRO (`gro=on`, the default); nil when off or refused.
    var groBuffer: VxlanReceiveBuffer?
    var senderLength: socklen_t = 0
    static let vectorCapacity = 129

    public init(spec: BackendSpec, eventLoop: NetEventLoop) throws(NetBackendError) {
        config = try VxlanConfiguration(spec)
        table = VxlanForwardingTable(remotes: config.remotes, ageingSeconds: config.ageingSeconds)
        peerPort = config.remotes[0].port
        VxlanHeader.write(vni: config.vni, to: sendHeader)
        sendVector[0] = iovec(iov_base: UnsafeMutableRawPointer(sendHeader), iov_len: VxlanHeader.length)
        receiveVector[0] = iovec(iov_base: UnsafeMutableRawPointer(receiveHeader), iov_len: VxlanHeader.length)
        zeroHeader.initializeMemory(as: UInt8.self, repeating: 0, count: 16)
        super.init(spec: spec, kind: "vxlan", name: "vni \(config.vni)", eventLoop: eventLoop)
        do throws(NetBackendError) {
            try openSocket()
        } catch {
            close()
            throw error
        }
    }

    deinit {
        close()
        sendHeader.deallocate()
        receiveHeader.deallocate()
        sendVector.deallocate()
        receiveVector.deallocate()
        sender.deallocate()
        peerStorage.deallocate()
        macScratch.deallocate()
        batchVector.deallocate()
        frameScratch.deallocate()
        zeroHeader.deallocate()
    }

    /// Opens the socket (inside `netns=` when given: a socket keeps its namespace, so the
    /// underlay may be another namespace than netbe's) and watches it.
    private func openSocket() throws(NetBackendError) {
        let path = try NetworkNamespace.run(in: config.netns) { [unowned self] () throws(NetBackendError) -> Int? in
            try self.makeSocket()
            return self.pathMTU(self.config.remotes[0])
        }
        try watchSocket(pathMTU: path)
    }

    private func makeSocket() throws(NetBackendError) {
        let device = "vxlan vni \(config.vni) at \(config.local)"
        let groups = config.remotes.filter(\.isMulticast)
        do throws(SystemCallError) {
            fd = try SocketCall.make(family: config.family, type: SocketCall.datagram, device: device)
            // A socket bound to a unicast address never gets datagrams sent to a group:
            // with a group among the remotes, bind the wildcard address on local's port
            // and use local's address as the interface for the group.
            var bindTo = config.local
            if !groups.isEmpty {
                bindTo = (config.family == AF_INET6 ? ResolvedSocketAddress.wildcard6 : ResolvedSocketAddress.wildcard4).withPort(config.local.port)
            }
            try SocketCall.bind(fd, bindTo, device: device)
            // Fragment rather than fail when a frame exceeds the path (Linux vxlan `df unset`).
            if config.family == AF_INET {
                try SocketCall.setInt(fd, Int32(IPPROTO_IP), IP_MTU_DISCOVER, IP_PMTUDISC_DONT, call: "IP_MTU_DISCOVER", device: device)
            }
            _ = try SocketCall.requestBuffer(fd, send: true, size: 4 << 20, device: device)
            _ = try SocketCall.requestBuffer(fd, send: false, size: 4 << 20, device: device)
            for g in groups { try join(g, device: device) }
            if config.gro {
                do {
                    try SocketCall.setInt(fd, VxlanSendBatch.solUDP, VxlanReceiveBuffer.udpGRO, 1, call: "UDP_GRO", device: device)
                    groBuffer = VxlanReceiveBuffer()
                } catch {
                    log.warning("\(name): \(error); reading one datagram per call")
                }
            }
        } catch {
            throw .system(error)
        }
    }

    private func watchSocket(pathMTU path: Int?) throws(NetBackendError) {
        do {
            source = try eventLoop.watch(fd: fd, name: "vxlan \(config.vni)") { [weak self] ready in
                guard let self else { return }
                if ready.contains(.write) {
                    self.source?.disable(.write)
                    self.writable()
                }
                if ready.contains(.read) { self.notifyReceive() }
            }
        } catch {
            throw .system(error)
        }
        let overhead = config.family == AF_INET6 ? VxlanHeader.overheadIPv6 : VxlanHeader.overheadIPv4
        if config.gso {
            let outerHeaders = (config.family == AF_INET6 ? 40 : 20) + 8
            batch = VxlanSendBatch(largestSegment: (path ?? 1500) - outerHeaders)
        }
        log.info("\(name): bound at \(config.local)\(config.netns.map { " in namespace \($0)" } ?? ""), remotes \(config.remoteText.joined(separator: ", ")); underlay path MTU \(path.map(String.init) ?? "unknown"), so the inner MTU should be \(path.map { String($0 - overhead) } ?? "\(overhead) bytes less")")
    }

    /// Joins a group on local's interface (its address for IPv4; any interface for IPv6),
    /// sends to groups through it, and does not hear its own (ip(7), ipv6(7)).
    private func join(_ group: ResolvedSocketAddress, device: String) throws(SystemCallError) {
        if config.family == AF_INET {
            let local = config.local.withUnsafeIPv4
            let g = group.withUnsafeIPv4
            var request = ip_mreq(imr_multiaddr: g, imr_interface: local)
            try Syscall.check("setsockopt IP_ADD_MEMBERSHIP", device: device) {
                setsockopt(fd, Int32(IPPROTO_IP), IP_ADD_MEMBERSHIP, &request, socklen_t(MemoryLayout<ip_mreq>.size))
            }
            var interface = local
            try Syscall.check("setsockopt IP_MULTICAST_IF", device: device) {
                setsockopt(fd, Int32(IPPROTO_IP), IP_MULTICAST_IF, &interface, socklen_t(MemoryLayout<in_addr>.size))
            }
            try SocketCall.setInt(fd, Int32(IPPROTO_IP), IP_MULTICAST_LOOP, 0, call: "IP_MULTICAST_LOOP", device: device)
        } else {
            var request = ipv6_mreq()
            request.ipv6mr_multiaddr = group.withUnsafeIPv6
            try Syscall.check("setsockopt IPV6_JOIN_GROUP", device: device) {
                setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_JOIN_GROUP, &request, socklen_t(MemoryLayout<ipv6_mreq>.size))
            }
            try SocketCall.setInt(fd, Int32(IPPROTO_IPV6), IPV6_MULTICAST_LOOP, 0, call: "IPV6_MULTICAST_LOOP", device: device)
        }
        log.info("\(name): joined multicast group \(group)")
    }

    /// The kernel's path MTU towards `remote` (IP_MTU on a connected probe socket), or nil.
    private func pathMTU(_ remote: ResolvedSocketAddress) -> Int? {
        guard !remote.isMulticast else { return nil }
        let probe = socket(config.family, cnb_SOCK_DGRAM | cnb_SOCK_CLOEXEC, 0)
        guard probe >= 0 else { return nil }
        defer { Glibc.close(probe) }
        guard remote.withSockaddr({ Glibc.connect(probe, $0, $1) }) == 0 else { return nil }
        let (level, option) = config.family == AF_INET6 ? (Int32(IPPROTO_IPV6), IPV6_MTU) : (Int32(IPPROTO_IP), IP_MTU)
        return (try? SocketCall.getInt(probe, level, option, call: "IP_MTU", device: "vxlan")).map(Int.init)
    }

    public override var isLinkUp: Bool { fd >= 0 }

    /// Checksum offload and TSO, done here (VxlanSendOffload), when sends go through the
    /// UDP GSO batch; nothing is offered on receive (the relay joins segments for a tap).
    static let offloads: VirtioNetFeatures = [.csum, .hostTSO4, .hostTSO6]
    public override var capabilities: VirtioNetFeatures { config.gso && config.tso ? Self.offloads : [] }
    public override var supportedHeaderLengths: [Int] { config.gso && config.tso ? [0, 10, 12] : [0] }

    /// A header only when an offload was accepted: without one it would carry nothing.
    public override func configure(features: VirtioNetFeatures, vnetHeaderLength: Int) throws(NetBackendError) -> Int {
        features.isDisjoint(with: Self.offloads) ? 0 : vnetHeaderLength
    }

    public override func watchReceive(_ on: Bool) {
        receiveEnabled = on
        if on { source?.enable(.read) } else { source?.disable(.read) }
    }

    /// Datagrams of a UDP GRO read not yet handed out: no readiness will report them.
    public override var hasBufferedFrames: Bool { !(groBuffer?.isEmpty ?? true) }

    // MARK: receive (VxlanReceive.swift), send (VxlanSend.swift)

    /// One datagram's inner frame into `buffers`; other VNIs and bad headers are dropped.
    public override func receive(into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> ReceiveResult {
        try receiveFrame(into: buffers)
    }

    public override func peekReceiveLength() throws(NetBackendError) -> Int { peekFrameLength() }

    /// One frame to the VTEP its destination was learned from, or to every remote.
    public override func send(_ frame: UnsafeBufferPointer<iovec>, more: Bool) throws(NetBackendError) -> SendResult {
        try sendFrame(frame, more: more)
    }

    /// The relay's end of batch: what was gathered for UDP GSO leaves now.
    public override func flush() throws(NetBackendError) { try flushGathered() }

    public override func close() {
        super.close()
        source?.cancel()
        source = nil
        if fd >= 0 { Glibc.close(fd); fd = -1 }
    }
}
