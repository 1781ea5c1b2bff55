#if canImport(Glibc)
import Glibc
#endif

/// `listen=`: bind and listen at once (so `ready` means a VMM can connect), accept one
/// peer, and stop accepting until it leaves; others wait in the backlog meanwhile.
extension StreamBackend {
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
            listenSource = try eventLoop.watch(fd: listenFD, name: "stream listen \(device)") { [unowned self] _ in
                self.acceptPeer()
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
            if e == EAGAIN || e == EINTR || e == ECONNABORTED { return }
            log.warning("\(name): \(SystemCallError(call: "accept", device: name, errno: e))")
            return
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
