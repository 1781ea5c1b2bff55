#if canImport(Glibc)
import Glibc
#endif

/// `connect=`: the first connection is made before `ready` (failing it ends netbe with
/// status 1); after a peer leaves, `reconnect=SECONDS` retries with a delay doubling
/// from 100 ms up to that many seconds, logging every change.
extension StreamBackend {
    /// How long the first connection may take before netbe gives up (exit 1).
    static let firstConnectTimeoutMilliseconds: Int32 = 10_000

    func connectFirstTime() throws(NetBackendError) {
        let device = address.description
        let fd: Int32
        do throws(SystemCallError) {
            fd = try SocketCall.make(family: resolved.family, type: SocketCall.stream, device: device)
            var e: Int32 = 0
            if resolved.withSockaddr({ Glibc.connect(fd, $0, $1) }) < 0 {
                e = errno
                if e == EINPROGRESS {
                    // Non-blocking with a deadline: an unreachable host must not hold `ready` for minutes.
                    var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                    let n = poll(&p, 1, Self.firstConnectTimeoutMilliseconds)
                    e = n == 0 ? ETIMEDOUT : n < 0 ? errno : ((try? SocketCall.getInt(fd, SOL_SOCKET, SO_ERROR, call: "SO_ERROR", device: device)) ?? EIO)
                }
            }
            if e != 0 {
                Glibc.close(fd)
                throw SystemCallError(call: "connect", device: device, errno: e)
            }
        } catch {
            throw .system(error)
        }
        try attach(fd: fd, peer: device)
    }

    func scheduleReconnect() {
        guard case .connect(let seconds) = role, seconds > 0 else { return }
        let delay = backoffMilliseconds
        backoffMilliseconds = min(backoffMilliseconds * 2, seconds * 1000)
        log.debug("\(name): reconnecting in \(delay) ms")
        do {
            retrySource = try eventLoop.addTimer(name: "stream reconnect \(name)", intervalMilliseconds: delay) { [weak self] in
                guard let self else { return }
                self.retrySource?.cancel()
                self.retrySource = nil
                self.attemptConnect()
            }
        } catch {
            eventLoop.stop(throwing: NetBackendError.system(error))
        }
    }

    /// One non-blocking attempt; EINPROGRESS finishes in `connectFinished`.
    private func attemptConnect() {
        let device = address.description
        let fd: Int32
        do { fd = try SocketCall.make(family: resolved.family, type: SocketCall.stream, device: device) } catch {
            log.warning("\(name): \(error)")
            scheduleReconnect()
            return
        }
        let rc = resolved.withSockaddr { Glibc.connect(fd, $0, $1) }
        if rc == 0 { attachOrRetry(fd); return }
        let e = errno
        guard e == EINPROGRESS else {
            Glibc.close(fd)
            log.debug("\(name): connect: \(String(cString: strerror(e)))")
            scheduleReconnect()
            return
        }
        connectingFD = fd
        do {
            connectingSource = try eventLoop.watch(fd: fd, name: "stream connecting \(device)") { [weak self] _ in
                self?.connectFinished()
            }
            connectingSource?.enable(.write)
        } catch {
            Glibc.close(fd)
            connectingFD = -1
            scheduleReconnect()
        }
    }

    private func connectFinished() {
        let fd = connectingFD
        connectingSource?.cancel()
        connectingSource = nil
        connectingFD = -1
        let e = (try? SocketCall.getInt(fd, SOL_SOCKET, SO_ERROR, call: "SO_ERROR", device: address.description)) ?? EIO
        if e != 0 {
            Glibc.close(fd)
            log.debug("\(name): connect: \(String(cString: strerror(e)))")
            scheduleReconnect()
            return
        }
        attachOrRetry(fd)
    }

    private func attachOrRetry(_ fd: Int32) {
        do throws(NetBackendError) { try attach(fd: fd, peer: address.description) } catch {
            log.warning("\(name): \(error)")
            scheduleReconnect()
        }
    }
}
