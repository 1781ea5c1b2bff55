import CNetBackends
#if canImport(Glibc)
import Glibc
#endif

/// Sending: to the learned VTEP or every remote (head-end replication), runs of
/// datagrams to one VTEP gathered for UDP GSO.
extension VxlanBackend {
    /// One frame as one datagram to the remote its destination MAC was learned from, or to
    /// every peer (head-end replication). A full socket on the first copy is `.wouldBlock`;
    /// a later copy that does not fit is counted `no_space` (the frame already left once).
    func sendFrame(_ frame: UnsafeBufferPointer<iovec>, more: Bool) throws(NetBackendError) -> SendResult {
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
    func flushGathered() throws(NetBackendError) {
        if let b = batch, !b.isEmpty { try flushBatch() }
    }

    func writable() {
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
}
