#if canImport(Glibc)
import Glibc
#endif

/// `listen=`: bind and listen at once (so `ready` means a VMM can connect), accept one
/// peer, and stop accepting until it leaves; others wait in the backlog meanwhile.
///
/// An accept that fails for want of resources (EMFILE, ENFILE, ENOMEM, ENOBUFS) leaves
/// the connection in the backlog, so the listener stays readable: rather than being
/// woken again at once, the listener is unwatched and retried after
/// `acceptRetryMilliseconds` on a timer made beforehand (making one then would need a
/// descriptor too), with one warning when it starts and one notice when it is over.
extension StreamBackend {
    static let acceptRetryMilliseconds = 100

    func startListening() throws(NetBackendError) {
        let device = address.description
        do {
            listenFD = try SocketCall.make(family: resolved.family, type: SocketCall.stream, device: device)
            if case .unix(let path) = address {
                try SocketCall.bindUnix(listenFD, path: path, type: SocketCall.stream)
                boundUnixPath = path
            } else {
                try SocketCall.setInt(listenFD, SOL_SOCKET, SO_REUSEADDR, 1, call: "SO_REUSEADDR", device: device)
                try SocketCall.bind(listenFD, resolved, device: device)
            }
            try Syscall.check("listen", device: device) { listen(listenFD, 8) }
            listenSource = try eventLoop.watch(fd: listenFD, name: "stream listen \(device)") { [weak self] _ in
                self?.acceptPeer()
            }
            acceptRetry = try eventLoop.makeOneShotTimer(name: "stream accept retry \(device)") { [weak self] in
                self?.retryAccept()
            }
        } catch {
            throw .system(error)
        }
        listenSource?.enable(.read)
        log.info("\(name): listening")
    }

    private func acceptPeer() {
        guard connectionFD < 0 else { listenSource?.disable(.read); return }
        var peer = ResolvedSocketAddress()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let fd = withUnsafeMutableBytes(of: &peer.storage) {
            // accept4 is hidden behind _GNU_SOURCE in Swift's Glibc module.
            accept(listenFD, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), &len)
        }
        if fd < 0 {
            let e = errno
            switch e {
            case EAGAIN, EINTR, ECONNABORTED:
                return
            case EMFILE, ENFILE, ENOMEM, ENOBUFS:
                pauseAccepting(SystemCallError(call: "accept", device: name, errno: e))
            default:
                // This connection's own trouble (it is consumed): go on with the next.
                log.warning("\(name): \(SystemCallError(call: "accept", device: name, errno: e))")
            }
            return
        }
        if acceptStalled {
            acceptStalled = false
            log.notice("\(name): accepting again")
        }
        peer.length = len
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        do { try SocketCall.setNonBlocking(fd, device: name) } catch {
            Glibc.close(fd)
            log.warning("\(name): \(error)")
            return
        }
        listenSource?.disable(.read)
        let label = address.isUnix ? "client of \(address)" : peer.description
        do throws(NetBackendError) { try attach(fd: fd, peer: label) } catch {
            log.warning("\(name): cannot take peer \(label): \(error)")
            listenSource?.enable(.read)
        }
    }
}

extension StreamBackend {
    /// Stops watching the listener and lets the retry timer look again later.
    func pauseAccepting(_ error: SystemCallError) {
        if !acceptStalled {
            acceptStalled = true
            log.warning("\(name): \(error); retrying every \(Self.acceptRetryMilliseconds) ms")
        }
        listenSource?.disable(.read)
        do { try acceptRetry?.arm(milliseconds: Self.acceptRetryMilliseconds) } catch {
            eventLoop.stop(throwing: NetBackendError.system(error))
        }
    }

    private func retryAccept() {
        if connectionFD < 0 { listenSource?.enable(.read) }
    }
}
