#if canImport(Glibc)
import Glibc
#endif

/// `vfkit=on`: the host side of Apple's `VZFileHandleNetworkDeviceAttachment` as vfkit
/// and tart use it (the role gvproxy `-listen-vfkit` plays). An unconnected unix datagram
/// socket is bound at `local=`; the peer is whoever sent the last datagram and replies go
/// back with sendto. vfkit opens with a 4-byte "VFKT" datagram, which is discarded; a new
/// VFKT or a new source address (a restarted peer) re-learns the peer. Never connect():
/// a connected socket would refuse the restarted peer.
extension DgramBackend {
    static let greeting: [UInt8] = Array("VFKT".utf8)
    static let requestedSendBuffer: Int32 = 1 << 20
    static let requestedReceiveBuffer: Int32 = 4 << 20

    func openVfkit() throws(NetBackendError) {
        guard case .unix(let path)? = local else { return }
        do {
            fd = try SocketCall.make(family: AF_UNIX, type: SocketCall.datagram, device: path)
            sendFD = fd
            try SocketCall.bindUnix(fd, path: path, type: SocketCall.datagram)
            boundUnixPath = path
            // Apple's framework sizes its side this way; a smaller buffer here drops
            // bursts as ENOBUFS (gvproxy issue 367).
            let sent = try SocketCall.requestBuffer(fd, send: true, size: Self.requestedSendBuffer, device: path)
            let received = try SocketCall.requestBuffer(fd, send: false, size: Self.requestedReceiveBuffer, device: path)
            log.info("\(path): vfkit socket bound; SO_SNDBUF asked \(Self.requestedSendBuffer) got \(sent), SO_RCVBUF asked \(Self.requestedReceiveBuffer) got \(received)")
        } catch {
            throw .system(error)
        }
    }

    /// Called with each received datagram (its source in `sender`): learns the peer.
    /// False when the datagram is not a frame (the greeting, or an unusable source).
    func learnPeer(datagram: UnsafeBufferPointer<iovec>, length: Int, sender: ResolvedSocketAddress) -> Bool {
        let isGreeting = length == 4 && Self.startsWithGreeting(datagram)
        if sender.length <= socklen_t(MemoryLayout<sa_family_t>.size) {
            // An unbound sender cannot be answered.
            log.warning("\(name): datagram from an unnamed socket ignored (the peer must bind its socket)")
            return false
        }
        if destination.length == 0 || !destination.sameAs(sender) {
            let before = destination.length == 0 ? nil : destination.description
            destination = sender
            log.info("\(name): vfkit peer is \(sender)\(before.map { " (was \($0))" } ?? "")\(isGreeting ? ", greeted with VFKT" : "")")
            if before == nil { notifyLinkState(true) }
        } else if isGreeting {
            log.info("\(name): vfkit peer \(sender) greeted again (restarted)")
        }
        return !isGreeting
    }

    private static func startsWithGreeting(_ vector: UnsafeBufferPointer<iovec>) -> Bool {
        var i = 0
        for v in vector {
            let p = v.iov_base!.assumingMemoryBound(to: UInt8.self)
            for j in 0..<v.iov_len where i < 4 {
                if p[j] != greeting[i] { return false }
                i += 1
            }
            if i == 4 { return true }
        }
        return false
    }
}
