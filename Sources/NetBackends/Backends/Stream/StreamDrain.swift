#if canImport(Glibc)
import Glibc
#endif

/// What a failed write to the peer does. A peer that wrote its frames and closed at once
/// makes our next write fail (EPIPE, or ECONNRESET once its kernel answered with a reset),
/// while what it wrote still waits in our socket: the kernel hands queued data out
/// before the error and the end of file (tcp_recvmsg and unix_stream_read_generic read
/// the queue first). Closing there would lose those frames without a count.
extension StreamBackend {
    /// EPIPE/ECONNRESET: stop sending (frames from now on are `no_peer` drops), keep
    /// reading through `receive` as usual until the end of file, which drops the
    /// connection; whole frames are delivered, a cut one counts as `truncated`.
    /// Any other error drops the connection at once.
    func writeFailed(_ error: SystemCallError) throws(NetBackendError) {
        guard connectionFD >= 0, !draining else { return }
        guard error.errno == EPIPE || error.errno == ECONNRESET else {
            try detach("\(error)", badInput: false)
            return
        }
        log.info("\(name): peer \(peerName) stopped taking frames (\(error)); reading what it sent before it left")
        draining = true
        output.reset()
        outputBlocked = false
        connectionSource?.disable(.write)
        if senderWaiting {
            // The relay waits for writable; let it retry (it now gets no_peer drops).
            senderWaiting = false
            eventLoop.execute { [weak self] in self?.notifyWritable() }
        }
    }
}
