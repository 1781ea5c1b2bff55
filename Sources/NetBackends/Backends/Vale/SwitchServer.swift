import Logging
#if canImport(Glibc)
import Glibc
#endif

/// What `netbe switch` runs: named `NetSwitch`es on one loop, and the control socket
/// (`SwitchControl`) through which `vale*` backends in other processes attach ports.
/// Who may attach is who may connect: the socket file's permissions. A client's
/// connection closing (the process exited or was killed) frees its port at once.
/// Loop thread only, after `init`.
public final class SwitchServer: @unchecked Sendable {
    public let socketPath: String
    public let switches: [NetSwitch]
    public let eventLoop: NetEventLoop
    private let listenFD: Int32
    private var listenSource: EventSource?
    private var clients: [Int32: Client] = [:]
    private let logger: Logger

    /// A connection and the port it attached, if any.
    private final class Client: @unchecked Sendable {
        let fd: Int32
        var source: EventSource?
        var port: SwitchPort?
        var ring: SwitchRingPort?
        var sw: NetSwitch?
        init(fd: Int32) { self.fd = fd }
    }

    /// Listens on `socketPath` (its directory made if missing, mode 0755; a stale socket
    /// left by a dead daemon replaced, a live one an error).
    public init(socketPath: String, switches: [NetSwitch], eventLoop: NetEventLoop) throws(NetBackendError) {
        self.socketPath = socketPath
        self.switches = switches
        self.eventLoop = eventLoop
        var logger = eventLoop.logger
        logger[metadataKey: "socket"] = "\(socketPath)"
        self.logger = logger
        let dir = socketPath.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        if !dir.isEmpty { Self.makeDirectories(dir) }
        do throws(SystemCallError) {
            listenFD = try SocketCall.make(family: AF_UNIX, type: SocketCall.seqpacket, device: socketPath)
            do {
                try SocketCall.bindUnix(listenFD, path: socketPath, type: SocketCall.seqpacket)
                try Syscall.check("listen", device: socketPath) { listen(listenFD, 64) }
            } catch {
                Glibc.close(listenFD)
                throw error
            }
        } catch {
            throw .system(error)
        }
        do {
            listenSource = try eventLoop.watch(fd: listenFD, name: "switch socket") { [weak self] _ in self?.accept() }
            listenSource?.enable(.read)
        } catch {
            Glibc.close(listenFD)
            unlink(socketPath)
            throw .system(error)
        }
        for sw in switches {
            sw.onPortFailure = { [weak self] port, _ in self?.portFailed(port) }
        }
    }

    private static func makeDirectories(_ path: String) {
        var prefix = ""
        for part in path.split(separator: "/") {
            prefix += "/" + part
            mkdir(prefix, 0o755)
        }
    }

    /// Closes the socket (removing its file) and every client's port.
    public func stop() {
        listenSource?.cancel()
        listenSource = nil
        Glibc.close(listenFD)
        unlink(socketPath)
        for c in clients.values { drop(c, why: "switch stopping") }
    }

    private func accept() {
        while true {
            let fd = Glibc.accept(listenFD, nil, nil)
            guard fd >= 0 else {
                if errno == EINTR { continue }
                if errno != EAGAIN { logger.warning("accept on \(socketPath): \(String(cString: strerror(errno)))") }
                return
            }
            // Close-on-exec, and non-blocking: a client that reads no replies cannot stall the switch.
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            let client = Client(fd: fd)
            do {
                client.source = try eventLoop.watch(fd: fd, name: "switch client") { [weak self, unowned client] _ in
                    self?.readable(client)
                }
                client.source?.enable(.read)
                clients[fd] = client
            } catch {
                logger.warning("cannot watch a client: \(error)")
                Glibc.close(fd)
            }
        }
    }

    private func readable(_ client: Client) {
        let received: (text: String, fds: [Int32])??
        do { received = try SwitchControl.receive(client.fd, device: "switch client", dontWait: true) } catch {
            drop(client, why: "\(error)")
            return
        }
        guard let received else {
            drop(client, why: "connection closed")
            return
        }
        guard let message = received else { return }   // nothing after all
        for d in message.fds { Glibc.close(d) }   // clients send none
        let words = message.text.split(separator: " ")
        do throws(NetBackendError) {
            switch words.first {
            case "attach" where words.count == 3:
                try attach(client, switchName: String(words[1]), portName: String(words[2]))
            case "features" where words.count == 2:
                guard let raw = UInt64(words[1]), let ring = client.ring, let port = client.port, let sw = client.sw else {
                    throw .invalidArgument("features before attach, or not a number")
                }
                ring.clientFeatures = VirtioNetFeatures(rawValue: raw).intersection(Negotiation.inSoftware.union(Negotiation.inSoftware.mirrored))
                try ring.setCapabilities(NetSwitch.features(for: ring), vnetHeaderLength: SwitchControl.ringHeaderLength)
                sw.renegotiated(port)
                logger.info("port \(sw.name):\(port.name) takes \(ring.negotiatedFeatures.isEmpty ? "no offloads" : "\(ring.negotiatedFeatures)")")
            case "ports":
                let only = words.count > 1 ? String(words[1]) : nil
                if let only, !switches.contains(where: { $0.name == only }) {
                    try reply(client, "error \(ENOENT) no switch named \(only)")
                } else {
                    try reply(client, "ok " + SwitchReport.json(switches.filter { only == nil || $0.name == only }))
                }
            default:
                try reply(client, "error \(EINVAL) unknown request '\(message.text.prefix(40))'")
            }
        } catch {
            logger.warning("client request '\(message.text.prefix(60))': \(error)")
            try? reply(client, "error \(EINVAL) \(error)")
        }
    }

    private func reply(_ client: Client, _ text: String, fds: [Int32] = []) throws(NetBackendError) {
        do { try SwitchControl.send(client.fd, text, fds: fds, device: "switch client") } catch { throw .system(error) }
    }

    /// A port name: 1 to 32 of [A-Za-z0-9_.-].
    static func validPortName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 32 && s.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x5f || c == 0x2e || c == 0x2d
        }
    }

    private func attach(_ client: Client, switchName: String, portName: String) throws(NetBackendError) {
        guard client.port == nil else { return try reply(client, "error \(EISCONN) this connection has a port already") }
        guard Self.validPortName(portName) else { return try reply(client, "error \(EINVAL) bad port name") }
        guard let sw = switches.first(where: { $0.name == switchName }) else {
            return try reply(client, "error \(ENOENT) no switch named \(switchName) here")
        }
        if sw.port(named: portName) != nil {
            logger.warning("attach \(switchName):\(portName) refused: the name is in use")
            return try reply(client, "error \(EBUSY) port \(switchName):\(portName) is attached")
        }
        let ring = try SwitchRingPort(name: "\(switchName):\(portName)", eventLoop: eventLoop)
        let port: SwitchPort
        do { port = try sw.attach(ring, name: portName) } catch {
            ring.close()
            throw error
        }
        do {
            try reply(client, "ok \(SwitchRingPort.slots) \(SwitchRingPort.bufferSize)", fds: ring.descriptors)
        } catch {
            sw.detach(port)
            ring.close()
            throw error
        }
        client.port = port
        client.ring = ring
        client.sw = sw
    }

    private func drop(_ client: Client, why: String) {
        client.source?.cancel()
        client.source = nil
        clients[client.fd] = nil
        Glibc.close(client.fd)
        if let port = client.port, let sw = client.sw {
            logger.info("port \(sw.name):\(port.name) freed (\(why))")
            sw.detach(port)
        }
        client.ring?.close()
        client.port = nil
        client.ring = nil
    }

    private func portFailed(_ port: SwitchPort) {
        guard let c = clients.values.first(where: { $0.port === port }) else { return }
        drop(c, why: "its port failed")
    }
}
