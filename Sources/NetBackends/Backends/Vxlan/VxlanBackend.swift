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
/// It offers no offloads: the relay cuts TSO frames into wire-sized segments before they
/// get here, since every VXLAN datagram must fit the underlay. The guest's MTU should be
/// the underlay path's less 50 bytes (70 with IPv6 outside); netbe logs that figure. A
/// larger frame still goes, fragmented by the kernel (DF is not set, as Linux vxlan's
/// default `df unset`).
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
    private var receiveEnabled = false
    private var senderWaiting = false
    /// The port frames are sent to on a learned peer: the first remote's.
    private let peerPort: UInt16

    // Preallocated: the outgoing header, the iovec arrays that put it before the frame,
    // the incoming header, the sender's address, and a scratch for a split MAC.
    private let sendHeader = UnsafeMutablePointer<UInt8>.allocate(capacity: VxlanHeader.length)
    private let receiveHeader = UnsafeMutablePointer<UInt8>.allocate(capacity: VxlanHeader.length)
    private let sendVector = UnsafeMutablePointer<iovec>.allocate(capacity: VxlanBackend.vectorCapacity)
    private let receiveVector = UnsafeMutablePointer<iovec>.allocate(capacity: VxlanBackend.vectorCapacity)
    private let sender = UnsafeMutableRawPointer.allocate(byteCount: MemoryLayout<sockaddr_storage>.size, alignment: 16)
    private let peerStorage = UnsafeMutableRawPointer.allocate(byteCount: MemoryLayout<sockaddr_storage>.size, alignment: 16)
    private let macScratch = UnsafeMutablePointer<UInt8>.allocate(capacity: 12)
    /// UDP GSO (`gso=on`, the default); nil when off or once the kernel refused it.
    private var batch: VxlanSendBatch?
    private let batchVector = UnsafeMutablePointer<iovec>.allocate(capacity: 1)
    /// UDP GRO (`gro=on`, the default); nil when off or refused.
    private var groBuffer: VxlanReceiveBuffer?
    private var senderLength: socklen_t = 0
    static let vectorCapacity = 129

    public init(spec: BackendSpec, eventLoop: NetEventLoop) throws(NetBackendError) {
        config = try VxlanConfiguration(spec)
        table = VxlanForwardingTable(remotes: config.remotes, ageingSeconds: config.ageingSeconds)
        peerPort = config.remotes[0].port
        VxlanHeader.write(vni: config.vni, to: sendHeader)
        sendVector[0] = iovec(iov_base: UnsafeMutableRawPointer(sendHeader), iov_len: VxlanHeader.length)
        receiveVector[0] = iovec(iov_base: UnsafeMutableRawPointer(receiveHeader), iov_len: VxlanHeader.length)
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
            source = try eventLoop.watch(fd: fd, name: "vxlan \(config.vni)") { [unowned self] ready in
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

    public override func enableReceive() {
        receiveEnabled = true
        source?.enable(.read)
    }

    public override func disableReceive() {
        receiveEnabled = false
        source?.disable(.read)
    }

    // MARK: receive

    /// One datagram: the VXLAN header into our own 8 bytes, the inner frame straight into
    /// `buffers`. A bad header (I flag clear, or too short) is `malformed`, another VNI
    /// `wrong_vni`; both are consumed and dropped. The inner source MAC is learned.
    public override func receive(into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> ReceiveResult {
        if let rx = groBuffer { return try receiveBuffered(rx, into: buffers) }
        let parts = min(buffers.count, Self.vectorCapacity - 1)
        for i in 0..<parts { receiveVector[i + 1] = buffers[i] }
        var message = msghdr()
        message.msg_iov = receiveVector
        message.msg_iovlen = parts + 1
        message.msg_name = sender
        message.msg_namelen = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result: IOResult
        do { result = try SocketCall.recvmsg(fd, &message, device: name) } catch {
            // An ICMP error for an earlier send (a remote not listening): not fatal.
            if error.errno == ECONNREFUSED || error.errno == EHOSTUNREACH || error.errno == ENETUNREACH {
                return .dropped(length: 0, reason: .noPeer)
            }
            throw .system(error)
        }
        guard case .processed(let n) = result else { return .empty }
        if let drop = classify(receiveHeader, datagram: n, truncated: message.msg_flags & cnb_MSG_TRUNC != 0) { return drop }
        if config.learning, let mac = sourceMAC(buffers) {
            let from = ResolvedSocketAddress(copying: sender, length: message.msg_namelen)
            table.learn(mac, from: from, port: peerPort, now: VxlanForwardingTable.now())
        }
        return .frame(length: n - VxlanHeader.length)
    }

    /// The inner frame's length of the next datagram, 0 when none waits. With UDP GRO the
    /// kernel reports a joined read whole: an over-estimate, which only reserves more.
    public override func peekReceiveLength() throws(NetBackendError) -> Int {
        if let rx = groBuffer, rx.nextSize > 0 { return max(rx.nextSize - VxlanHeader.length, 0) }
        let n = recv(fd, receiveHeader, VxlanHeader.length, cnb_MSG_PEEK | cnb_MSG_TRUNC | cnb_MSG_DONTWAIT)
        return n > VxlanHeader.length ? n - VxlanHeader.length : 0
    }

    /// A drop for a datagram that is not a frame of ours, nil for one that is.
    private func classify(_ header: UnsafePointer<UInt8>, datagram n: Int, truncated: Bool) -> ReceiveResult? {
        let inner = n - VxlanHeader.length
        if n < VxlanHeader.length {
            statistics.countDrop(.malformed)
            return .dropped(length: 0, reason: .malformed)
        }
        switch VxlanHeader.check(header, vni: config.vni) {
        case .badHeader:
            statistics.countDrop(.malformed)
            return .dropped(length: inner, reason: .malformed)
        case .otherVNI:
            statistics.countDrop(.wrongVNI)
            return .dropped(length: inner, reason: .wrongVNI)
        case .ours: break
        }
        if truncated || inner < 14 {
            statistics.countDrop(.truncated)
            return .dropped(length: max(inner, 0), reason: .truncated)
        }
        return nil
    }

    /// `gro=on`: one read may hold several datagrams (UDP GRO); they are served one by one,
    /// each frame copied out to `buffers`.
    private func receiveBuffered(_ rx: VxlanReceiveBuffer, into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> ReceiveResult {
        while true {
            if let (p, n) = rx.next() {
                let header = p.assumingMemoryBound(to: UInt8.self)
                if let drop = classify(header, datagram: n, truncated: false) { return drop }
                if config.learning {
                    let from = ResolvedSocketAddress(copying: sender, length: senderLength)
                    table.learn(VxlanForwardingTable.mac(header + VxlanHeader.length + 6), from: from, port: peerPort,
                                now: VxlanForwardingTable.now())
                }
                return deliver(p + VxlanHeader.length, length: n - VxlanHeader.length, into: buffers)
            }
            var message = msghdr()
            rx.prepare(&message)
            message.msg_name = sender
            message.msg_namelen = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let result: IOResult
            do { result = try SocketCall.recvmsg(fd, &message, device: name) } catch {
                if error.errno == ECONNREFUSED || error.errno == EHOSTUNREACH || error.errno == ENETUNREACH {
                    return .dropped(length: 0, reason: .noPeer)
                }
                throw .system(error)
            }
            guard case .processed(let n) = result else { return .empty }
            if message.msg_flags & cnb_MSG_TRUNC != 0 {
                statistics.countDrop(.truncated)
                return .dropped(length: n, reason: .truncated)
            }
            senderLength = message.msg_namelen
            rx.filled(n, message)
        }
    }

    private func sourceMAC(_ buffers: UnsafeBufferPointer<iovec>) -> UInt64? {
        guard let first = buffers.first, let base = first.iov_base else { return nil }
        if first.iov_len >= 12 { return VxlanForwardingTable.mac(base.assumingMemoryBound(to: UInt8.self) + 6) }
        guard gather(12, from: buffers) else { return nil }
        return VxlanForwardingTable.mac(macScratch + 6)
    }

    /// Copies the first `count` bytes of an iovec list into `macScratch`.
    private func gather(_ count: Int, from buffers: UnsafeBufferPointer<iovec>) -> Bool {
        var done = 0
        for v in buffers where done < count {
            guard let base = v.iov_base else { continue }
            let take = min(count - done, v.iov_len)
            (macScratch + done).update(from: base.assumingMemoryBound(to: UInt8.self), count: take)
            done += take
        }
        return done == count
    }

    // MARK: send

    /// One frame as one datagram to the remote its destination MAC was learned from, or to
    /// every peer (head-end replication). A full socket on the first copy is `.wouldBlock`;
    /// a later copy that does not fit is counted `no_space` (the frame already left once).
    public override func send(_ frame: UnsafeBufferPointer<iovec>, more: Bool) throws(NetBackendError) -> SendResult {
        let parts = frame.count
        guard parts < Self.vectorCapacity else {
            statistics.countDrop(.malformed)
            return .dropped(.malformed)
        }
        var length = 0
        for i in 0..<parts {
            sendVector[i + 1] = frame[i]
            length += frame[i].iov_len
        }
        guard length >= 14 else {
            statistics.countDrop(.truncated)
            return .dropped(.truncated)
        }
        let destination: UInt64
        if let base = frame[0].iov_base, frame[0].iov_len >= 6 {
            destination = VxlanForwardingTable.mac(base.assumingMemoryBound(to: UInt8.self))
        } else {
            guard gather(6, from: frame) else { return .dropped(.truncated) }
            destination = VxlanForwardingTable.mac(macScratch)
        }
        let known = table.lookup(destination, now: VxlanForwardingTable.now())
        if let b = batch {
            // One peer to send to (learned, or the only remote): gather for UDP GSO.
            if let peer = known ?? (table.configured == 1 ? 0 : nil) {
                let datagram = length + VxlanHeader.length
                if !b.accepts(datagram, peer: peer) && !b.isEmpty {
                    try flushBatch()
                    if !b.isEmpty { senderWaiting = true; return .wouldBlock }
                }
                if b.accepts(datagram, peer: peer) {
                    b.append(header: sendHeader, frame: frame, length: datagram, peer: peer)
                    statistics.frames &+= 1
                    statistics.bytes &+= UInt64(length)
                    if b.count == VxlanSendBatch.maximumSegments { try flushBatch() }
                    return .sent(length)
                }
                // Larger than one segment may be: alone, fragmented by the kernel.
            } else if !b.isEmpty {
                // Flooding: what was gathered leaves first, frames keep their order.
                try flushBatch()
                if !b.isEmpty { senderWaiting = true; return .wouldBlock }
            }
        }
        if let peer = known {
            return try transmit(to: peer, parts: parts, length: length, first: true)
        }
        var result = SendResult.dropped(.noPeer)
        for peer in 0..<table.configured {
            let r = try transmit(to: peer, parts: parts, length: length, first: peer == 0)
            if peer == 0 { result = r; if r == .wouldBlock { return r } }
        }
        return result
    }

    private func transmit(to peer: Int, parts: Int, length: Int, first: Bool) throws(NetBackendError) -> SendResult {
        let address = table.peers[peer]
        address.withSockaddr { p, len in peerStorage.copyMemory(from: p, byteCount: Int(len)) }
        var message = msghdr()
        message.msg_iov = sendVector
        message.msg_iovlen = parts + 1
        message.msg_name = peerStorage
        message.msg_namelen = address.length
        let result: IOResult
        do { result = try SocketCall.sendmsg(fd, &message, device: name) } catch {
            switch error.errno {
            case ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, EHOSTDOWN:
                statistics.countDrop(.noPeer)
                return .dropped(.noPeer)
            case EMSGSIZE:
                statistics.countDrop(.malformed)
                return .dropped(.malformed)
            default:
                throw .system(error)
            }
        }
        switch result {
        case .wouldBlock:
            if first {
                senderWaiting = true
                source?.enable(.write)
                return .wouldBlock
            }
            statistics.countDrop(.noSpace)
            return .dropped(.noSpace)
        case .processed:
            if first {
                statistics.frames &+= 1
                statistics.bytes &+= UInt64(length)
            }
            return .sent(length)
        }
    }

    /// The relay's end of batch: what was gathered leaves now.
    public override func flush() throws(NetBackendError) {
        if let b = batch, !b.isEmpty { try flushBatch() }
    }

    private func writable() {
        if let b = batch, !b.isEmpty {
            do throws(NetBackendError) { try flushBatch() } catch { eventLoop.stop(throwing: error); return }
            if !b.isEmpty { return }
        }
        if senderWaiting { senderWaiting = false; notifyWritable() }
    }

    /// Sends the gathered datagrams in one sendmsg with UDP_SEGMENT. A full socket keeps
    /// them and arms writable. If the kernel refuses GSO (EINVAL, EIO: an old kernel, a
    /// path smaller than thought), they go one by one and GSO stays off.
    private func flushBatch() throws(NetBackendError) {
        guard let b = batch, !b.isEmpty else { return }
        let address = table.peers[b.peer]
        address.withSockaddr { p, len in peerStorage.copyMemory(from: p, byteCount: Int(len)) }
        batchVector.pointee = iovec(iov_base: b.buffer, iov_len: b.used)
        var message = msghdr()
        message.msg_iov = batchVector
        message.msg_iovlen = 1
        message.msg_name = peerStorage
        message.msg_namelen = address.length
        b.setControl(&message)
        let result: IOResult
        do { result = try SocketCall.sendmsg(fd, &message, device: name) } catch {
            switch error.errno {
            case EINVAL, EIO, EMSGSIZE, ENOPROTOOPT, EOPNOTSUPP:
                log.warning("\(name): UDP GSO refused (\(error)); sending one datagram per frame from now on")
                sendOneByOne(b, address: address)
                b.reset()
                batch = nil
                return
            case ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, EHOSTDOWN:
                for _ in 0..<b.count { statistics.countDrop(.noPeer) }
                b.reset()
                return
            default:
                throw .system(error)
            }
        }
        switch result {
        case .processed: b.reset()
        case .wouldBlock: source?.enable(.write)
        }
    }

    private func sendOneByOne(_ b: VxlanSendBatch, address: ResolvedSocketAddress) {
        var offset = 0
        while offset < b.used {
            let size = min(b.segmentSize, b.used - offset)
            batchVector.pointee = iovec(iov_base: b.buffer + offset, iov_len: size)
            var message = msghdr()
            message.msg_iov = batchVector
            message.msg_iovlen = 1
            message.msg_name = peerStorage
            message.msg_namelen = address.length
            if (try? SocketCall.sendmsg(fd, &message, device: name)) != .processed(size) { statistics.countDrop(.noSpace) }
            offset += size
        }
    }

    public override func close() {
        super.close()
        source?.cancel()
        source = nil
        if fd >= 0 { Glibc.close(fd); fd = -1 }
    }
}

extension ResolvedSocketAddress {
    static var wildcard4: ResolvedSocketAddress {
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        return withUnsafeBytes(of: &sa) { ResolvedSocketAddress(copying: $0.baseAddress!, length: socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }

    static var wildcard6: ResolvedSocketAddress {
        var sa = sockaddr_in6()
        sa.sin6_family = sa_family_t(AF_INET6)
        return withUnsafeBytes(of: &sa) { ResolvedSocketAddress(copying: $0.baseAddress!, length: socklen_t(MemoryLayout<sockaddr_in6>.size)) }
    }

    var withUnsafeIPv4: in_addr {
        withUnsafeBytes(of: storage) { $0.load(fromByteOffset: 4, as: in_addr.self) }
    }

    var withUnsafeIPv6: in6_addr {
        withUnsafeBytes(of: storage) { $0.loadUnaligned(fromByteOffset: 8, as: in6_addr.self) }
    }
}
