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
    /// Any other error drops the connection at once. A peer that stopped reading but never
    /// closes (shutdown(SHUT_RD), or a stuck process) would hold the connection half-open
    /// for ever: the drain ends after `drainDeadlineMilliseconds` as if it had closed.
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
        try armDrainDeadline()
        if senderWaiting {
            // The relay waits for writable; let it retry (it now gets no_peer drops).
            senderWaiting = false
            eventLoop.execute { [weak self] in self?.notifyWritable() }
        }
    }

    static let drainDeadlineMilliseconds = 2000

    private func armDrainDeadline() throws(NetBackendError) {
        do throws(SystemCallError) {
            if drainTimer == nil {
                drainTimer = try eventLoop.makeOneShotTimer(name: "\(name) drain deadline") { [weak self] in
                    guard let self, self.draining else { return }
                    do throws(NetBackendError) {
                        try self.detach("it stopped reading and did not close within \(Self.drainDeadlineMilliseconds) ms", badInput: false)
                    } catch {
                        self.eventLoop.stop(throwing: error)
                    }
                }
            }
            try drainTimer?.arm(milliseconds: Self.drainDeadlineMilliseconds)
        } catch {
            // No timer (out of descriptors): drop the connection now rather than risk
            // holding it for ever; what it still holds is lost.
            log.warning("\(name): \(error); dropping peer \(peerName) without reading what it sent")
            try detach("\(error)", badInput: false)
        }
    }
}
