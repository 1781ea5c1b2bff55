import Logging
#if canImport(Glibc)
import Glibc
#endif

/// The frontend connection's lifecycle: listen and accept (`server=on`), connect and
/// reconnect (`server=off`), read messages, and release everything the frontend gave
/// when it goes.
extension VhostUserBackend {
    func listen() throws(NetBackendError) {
        do {
            listenFD = try SocketCall.make(family: AF_UNIX, type: SocketCall.stream, device: name)
            try SocketCall.bindUnix(listenFD, path: config.socketPath, type: SocketCall.stream)
            boundPath = config.socketPath
            try Syscall.check("listen", device: name) { Glibc.listen(listenFD, 4) }
            listenSource = try eventLoop.watch(fd: listenFD, name: "vhost-user listen \(name)") { [weak self] _ in self?.accept() }
        } catch {
            throw .system(error)
        }
        listenSource?.enable(.read)
        logger.info("\(name): listening for a vhost-user frontend")
    }

    private func accept() {
        let fd = Glibc.accept(listenFD, nil, nil)
        if fd < 0 {
            let e = errno
            if e != EAGAIN && e != EINTR && e != ECONNABORTED {
                logger.warning("\(name): \(SystemCallError(call: "accept", device: name, errno: e))")
            }
            return
        }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        if channel != nil {
            logger.warning("\(name): a second frontend connected while one is served; refused")
            _ = Glibc.close(fd)
            return
        }
        attach(fd)
    }

    /// server=off: one connection attempt; false when nobody listens.
    @discardableResult
    func connectToFrontend(first: Bool = false) -> Bool {
        guard channel == nil else { return true }
        let fd: Int32
        do {
            fd = try SocketCall.make(family: AF_UNIX, type: SocketCall.stream, blocking: true, device: name)
        } catch {
            logger.error("\(name): \(error)")
            return false
        }
        let rc = ResolvedSocketAddress(unixPath: config.socketPath).withSockaddr { Glibc.connect(fd, $0, $1) }
        if rc != 0 {
            let e = errno
            _ = Glibc.close(fd)
            if !first { logger.debug("\(name): \(SystemCallError(call: "connect", device: name, errno: e))") }
            if let s = config.reconnectSeconds { try? reconnectTimer?.arm(milliseconds: s * 1000) }
            return false
        }
        attach(fd)
        return true
    }

    private func attach(_ fd: Int32) {
        do { try SocketCall.setNonBlocking(fd, device: name) } catch {
            logger.warning("\(name): \(error)")
            _ = Glibc.close(fd)
            return
        }
        let c = VhostUserChannel(fd: fd, device: name)
        channel = c
        do {
            channelSource = try eventLoop.watch(fd: fd, name: "vhost-user \(name)") { [weak self] _ in self?.readMessages() }
        } catch {
            logger.error("\(name): \(error)")
            channel = nil
            return
        }
        channelSource?.enable(.read)
        listenSource?.disable(.read)
        logger.info("\(name): vhost-user frontend connected")
    }

    /// The frontend left or broke the protocol: everything it gave is released.
    func disconnect(_ why: String, error: Bool) {
        if error { logger.error("\(name): \(why); connection closed") } else { logger.info("\(name): \(why)") }
        channelSource?.cancel(); channelSource = nil
        channel = nil
        resetDevice()
        memory.unmapAll()
        ackedFeatures = 0
        ackedProtocol = 0
        updateLink()
        if config.server {
            listenSource?.enable(.read)
        } else if let s = config.reconnectSeconds {
            try? reconnectTimer?.arm(milliseconds: s * 1000)
        } else {
            eventLoop.stop(throwing: NetBackendError.deviceGone("\(name): the vhost-user frontend went away and reconnect= is not set"))
        }
    }

    /// Both queues back to their initial state, their descriptors closed.
    func resetDevice() {
        rxKickSource?.cancel(); rxKickSource = nil
        txKickSource?.cancel(); txKickSource = nil
        rx.reset()
        tx.reset()
    }

    func readMessages() {
        guard let c = channel else { return }
        // A few messages per wake-up; level-triggered epoll brings the rest.
        for _ in 0..<16 {
            let r: VhostUserChannel.ReadResult
            do { r = try c.read() } catch {
                disconnect("\(error)", error: true)
                return
            }
            switch r {
            case .incomplete:
                return
            case .closed:
                disconnect("the vhost-user frontend closed the connection", error: false)
                return
            case .protocolError(let why):
                disconnect(why, error: true)
                return
            case .message(let request, let flags, let payload):
                if let why = handle(request: request, flags: flags, payload: payload, channel: c) {
                    c.finish()
                    disconnect(why, error: true)
                    return
                }
                c.finish()
                guard channel === c else { return }
            }
        }
    }
}
