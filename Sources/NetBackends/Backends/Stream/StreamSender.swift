#if canImport(Glibc)
import Glibc
#endif

/// The send side of a stream: `[u32 big-endian length][frame]` records written with
/// writev, or gathered per relay batch; partial writes keep frame boundaries.
extension StreamBackend {
    /// Records up to this size are gathered while the relay says more follow (`more`),
    /// and written together at `flush`; larger ones (GSO frames) go out with writev.
    static let gatherLimit = 16 * 1024
    /// A gathered batch this large is written without waiting for `flush`.
    static let gatherFlushSize = 128 * 1024

    /// `send`'s body (see there).
    @inline(__always)
    func sendRecord(_ frame: UnsafeBufferPointer<iovec>, more: Bool) throws(NetBackendError) -> SendResult {
        guard connectionFD >= 0, !draining else {
            statistics.countDrop(.noPeer)
            return .dropped(.noPeer)
        }
        if outputBlocked {
            // Bytes from before are still owed: nothing new until they are out.
            guard try flushOutput() else { return waitWritable() }
            guard connectionFD >= 0, !draining else { statistics.countDrop(.noPeer); return .dropped(.noPeer) }
        }
        let length = IOVectors.length(of: frame)
        guard frame.count < Self.sendVectorCapacity, length <= input.maximumLength else {
            statistics.countDrop(.malformed)
            return .dropped(.malformed)
        }
        if more && length <= Self.gatherLimit && output.space >= length + 4 {
            output.append(frame, length: length)
            statistics.frames &+= 1
            statistics.bytes &+= UInt64(length)
            if output.count >= Self.gatherFlushSize { _ = try flushOutput() }
            return .sent(length)
        }
        if !output.isEmpty {
            guard try flushOutput() else { return waitWritable() }
            guard connectionFD >= 0, !draining else { statistics.countDrop(.noPeer); return .dropped(.noPeer) }
        }
        lengthPrefix.pointee = UInt32(length).bigEndian
        sendVector[0] = iovec(iov_base: lengthPrefix, iov_len: 4)
        guard let parts = frame.baseAddress, frame.count > 0 else { fatalError("stream send: an empty iovec list is no frame") }
        (sendVector + 1).update(from: parts, count: frame.count)
        var message = msghdr()
        message.msg_iov = sendVector
        message.msg_iovlen = frame.count + 1
        let result: IOResult
        do { result = try SocketCall.sendmsg(connectionFD, &message, device: peerName) } catch {
            try writeFailed(error)
            statistics.countDrop(.noPeer)
            return .dropped(.noPeer)
        }
        switch result {
        case .wouldBlock:
            return waitWritable()
        case .processed(let n):
            if n < length + 4 {
                output.keep(UnsafeBufferPointer(start: sendVector, count: frame.count + 1), skipping: n)
                outputBlocked = true
                connectionSource?.enable(.write)
            }
            statistics.frames &+= 1
            statistics.bytes &+= UInt64(length)
            return .sent(length)
        }
    }

    /// Ends a relay batch: the gathered records go out in one write.
    func flushBatch() throws(NetBackendError) {
        if connectionFD >= 0 && !draining && !output.isEmpty && !outputBlocked { _ = try flushOutput() }
    }

    /// Writes what `output` holds; false (and writable armed) when the socket is full.
    /// A failed write drops the peer.
    func flushOutput() throws(NetBackendError) -> Bool {
        do {
            if try output.flush(to: connectionFD, device: peerName) {
                outputBlocked = false
                return true
            }
        } catch {
            try writeFailed(error)
            return true
        }
        outputBlocked = true
        connectionSource?.enable(.write)
        return false
    }

    @inline(__always)
    func waitWritable() -> SendResult {
        senderWaiting = true
        connectionSource?.enable(.write)
        return .wouldBlock
    }
}
