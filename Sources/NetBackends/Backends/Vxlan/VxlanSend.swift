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
        if vnetHeaderLength > 0 { return try sendOffloaded(frame, headerLength: vnetHeaderLength) }
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
            // One peer to send to (learned, or the only remote): queued for UDP GSO.
            if let peer = known ?? (table.configured == 1 ? 0 : nil) {
                let datagram = length + VxlanHeader.length
                guard try makeRoom(b, datagrams: 1, bytes: datagram, peer: peer) else {
                    senderWaiting = true
                    return .wouldBlock
                }
                let at = b.end
                at.copyMemory(from: sendHeader, byteCount: VxlanHeader.length)
                IOVectors.gather(frame, into: at + VxlanHeader.length)
                b.commit(datagram, peer: peer)
                statistics.frames &+= 1
                statistics.bytes &+= UInt64(length)
                try flushBatch(force: false)
                return .sent(length)
            } else if !b.isEmpty {
                // Flooding: what was queued leaves first, frames keep their order.
                try flushBatch(force: true)
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

    /// The relay's end of batch: what was queued leaves now.
    func flushGathered() throws(NetBackendError) {
        if let b = batch, !b.isEmpty { try flushBatch(force: true) }
    }

    func writable() {
        batchBlocked = false
        if let b = batch, !b.isEmpty {
            do throws(NetBackendError) { try flushBatch(force: true) } catch { eventLoop.stop(throwing: error); return }
            if !b.isEmpty { return }
        }
        if senderWaiting { senderWaiting = false; notifyWritable() }
    }

    /// Whether `datagrams` datagrams of `bytes` in all to `peer` fit in the batch, after
    /// sending what is queued if needed; false when the socket is full.
    func makeRoom(_ b: VxlanSendBatch, datagrams: Int, bytes: Int, peer: Int) throws(NetBackendError) -> Bool {
        if b.hasRoom(datagrams: datagrams, bytes: bytes, peer: peer) { return true }
        if batchBlocked { return false }
        try flushBatch(force: true)
        return b.hasRoom(datagrams: datagrams, bytes: bytes, peer: peer)
    }

    /// Sends the queued runs, each in one sendmsg (with UDP_SEGMENT for more than one
    /// datagram); without `force`, a last run that more datagrams could still join waits.
    /// A full socket keeps the rest and arms writable. If the kernel refuses GSO (EINVAL,
    /// EIO, EMSGSIZE: an old kernel, a path smaller than thought), every datagram leaves
    /// alone from then on.
    func flushBatch(force: Bool) throws(NetBackendError) {
        guard let b = batch, !batchBlocked else { return }
        while let run = b.nextRun() {
            if !force && !run.complete { return }
            let address = table.peers[b.peer]
            address.withSockaddr { p, len in peerStorage.copyMemory(from: p, byteCount: Int(len)) }
            batchVector.pointee = iovec(iov_base: run.at, iov_len: run.bytes)
            var message = msghdr()
            message.msg_iov = batchVector
            message.msg_iovlen = 1
            message.msg_name = peerStorage
            message.msg_namelen = address.length
            b.setControl(&message, segment: run.segment)
            let result: IOResult
            do { result = try SocketCall.sendmsg(fd, &message, device: name) } catch {
                let refused = [EINVAL, EIO, EMSGSIZE, ENOPROTOOPT, EOPNOTSUPP].contains(error.errno)
                if refused && run.segment > 0 {
                    log.warning("\(name): UDP GSO refused (\(error)); sending one datagram per frame from now on")
                    b.segmentOffload = false
                    continue
                }
                switch error.errno {
                case EMSGSIZE:
                    statistics.countLostAfterSend(.oversized)
                case ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, EHOSTDOWN:
                    statistics.countLostAfterSend(.noPeer, UInt64(run.datagrams))
                default:
                    throw .system(error)
                }
                b.sentRun(datagrams: run.datagrams, bytes: run.bytes)
                continue
            }
            switch result {
            case .processed:
                b.sentRun(datagrams: run.datagrams, bytes: run.bytes)
            case .wouldBlock:
                batchBlocked = true
                source?.enable(.write)
                return
            }
        }
    }
}
