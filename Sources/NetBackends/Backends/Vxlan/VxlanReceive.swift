import CNetBackends
#if canImport(Glibc)
import Glibc
#endif

/// Receiving: one datagram per read straight into the relay's buffer, or (UDP GRO) a
/// read of several served one by one; the inner source MAC is learned.
extension VxlanBackend {
    /// One datagram: the VXLAN header into our own 8 bytes, the inner frame straight into
    /// `buffers`. A bad header (I flag clear, or too short) is `malformed`, another VNI
    /// `wrong_vni`; both are consumed and dropped. The inner source MAC is learned.
    func receiveFrame(into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> ReceiveResult {
        if let rx = groBuffer { return try receiveBuffered(rx, into: buffers) }
        let h = vnetHeaderLength
        let vectors = h > 0 ? afterZeroHeader(h, buffers) : copyVectors(buffers)
        var message = msghdr()
        message.msg_iov = receiveVector
        message.msg_iovlen = vectors
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
        if config.learning, let mac = sourceMAC(buffers, after: h) {
            let from = ResolvedSocketAddress(copying: sender, length: message.msg_namelen)
            table.learn(mac, from: from, port: peerPort, now: VxlanForwardingTable.now())
        }
        return .frame(length: h + n - VxlanHeader.length)
    }

    /// `receiveVector` after the VXLAN header: the caller's buffers; returns the entries used.
    private func copyVectors(_ buffers: UnsafeBufferPointer<iovec>) -> Int {
        let parts = min(buffers.count, Self.vectorCapacity - 1)
        for i in 0..<parts { receiveVector[i + 1] = buffers[i] }
        return parts + 1
    }

    /// With a virtio-net header: its `h` bytes zeroed at the start of the caller's buffers
    /// (a frame that asks for nothing), `receiveVector` the buffers after it.
    private func afterZeroHeader(_ h: Int, _ buffers: UnsafeBufferPointer<iovec>) -> Int {
        var skip = h
        var k = 1
        for v in buffers where k < Self.vectorCapacity {
            guard let base = v.iov_base else { continue }
            if skip > 0 {
                let n = min(skip, v.iov_len)
                base.initializeMemory(as: UInt8.self, repeating: 0, count: n)
                skip -= n
                if n == v.iov_len { continue }
                receiveVector[k] = iovec(iov_base: base + n, iov_len: v.iov_len - n)
            } else {
                receiveVector[k] = v
            }
            k += 1
        }
        return k
    }

    /// The inner frame's length of the next datagram, 0 when none waits. With UDP GRO the
    /// kernel reports a joined read whole: an over-estimate, which only reserves more.
    func peekFrameLength() -> Int {
        if let rx = groBuffer, rx.nextSize > 0 { return max(rx.nextSize - VxlanHeader.length, 0) + vnetHeaderLength }
        let n = recv(fd, receiveHeader, VxlanHeader.length, cnb_MSG_PEEK | cnb_MSG_TRUNC | cnb_MSG_DONTWAIT)
        return n > VxlanHeader.length ? n - VxlanHeader.length + vnetHeaderLength : 0
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
                let h = vnetHeaderLength
                if h == 0 { return deliver(p + VxlanHeader.length, length: n - VxlanHeader.length, into: buffers) }
                var out = IOVectorWriter(buffers)
                guard out.write(zeroHeader, h), out.write(p + VxlanHeader.length, n - VxlanHeader.length) else {
                    statistics.countDrop(.noSpace)
                    return .dropped(length: h + n - VxlanHeader.length, reason: .noSpace)
                }
                return .frame(length: h + n - VxlanHeader.length)
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

    /// The source MAC of the frame that starts `h` bytes into `buffers`.
    private func sourceMAC(_ buffers: UnsafeBufferPointer<iovec>, after h: Int) -> UInt64? {
        guard let first = buffers.first, let base = first.iov_base else { return nil }
        if first.iov_len >= h + 12 { return VxlanForwardingTable.mac(base.assumingMemoryBound(to: UInt8.self) + h + 6) }
        guard gather(h + 12, from: buffers) else { return nil }
        return VxlanForwardingTable.mac(macScratch + h + 6)
    }

    /// Copies the first `count` bytes of an iovec list into `macScratch`.
    func gather(_ count: Int, from buffers: UnsafeBufferPointer<iovec>) -> Bool {
        var done = 0
        for v in buffers where done < count {
            guard let base = v.iov_base else { continue }
            let take = min(count - done, v.iov_len)
            (macScratch + done).update(from: base.assumingMemoryBound(to: UInt8.self), count: take)
            done += take
        }
        return done == count
    }
}
