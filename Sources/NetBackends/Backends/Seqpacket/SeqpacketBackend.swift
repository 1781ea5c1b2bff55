import CNetBackends
#if canImport(Glibc)
import Glibc
#endif

/// A backend on one end of a `SOCK_SEQPACKET` unix socket: one frame per message (bhyve's
/// slirp helper protocol), either bare or, with `linkHeaderLength` 12, behind a 12-byte
/// virtio-net header whatever the frontend's length (netbe's own helper link, so that
/// offloads cross it and no message depends on what was negotiated when it was sent).
/// The header is converted to the frontend's 0, 10 or 12 bytes on the way through.
/// When the peer goes away `peerGone` decides: by default the backend reports `.deviceGone`.
///
/// Frames move in batches, a system call per batch rather than per frame (the cost of the
/// helper hop): `send` copies the frame into a `SeqpacketSendBatch`, written with one
/// `sendmmsg` at `flush` (the relay's end of batch) or when the batch is full; `receive`
/// serves frames that one `recvmmsg` read ahead into a `SeqpacketReceiveRing`.
/// Back-pressure is kept: a full batch that the socket cannot take returns `.wouldBlock`,
/// and the writable handler runs once the queued frames are out. A message longer than
/// a slot (or than the caller's buffers) is dropped whole, never half-delivered.
public class SeqpacketBackend: NetBackend, @unchecked Sendable {
    /// The socket, or -1 while no peer is attached.
    public private(set) var fd: Int32 = -1
    /// Frames per `sendmmsg`/`recvmmsg`.
    public static let batchSize = 64
    /// 0 (bare frames) or 12 (every message starts with a virtio-net header).
    public let linkHeaderLength: Int
    private let outgoing: SeqpacketSendBatch
    private let incoming: SeqpacketReceiveRing
    private var socketSource: EventSource?
    /// `recvmmsg` calls left in this read-readiness callback. One batch per callback,
    /// then `.empty`: the frames' answers (the guest's ACKs, read from the other side of
    /// the relay) reach libslirp a batch later rather than after everything queued,
    /// which keeps libslirp's send window (128 KiB per connection) moving. The loop is
    /// level-triggered, so what is left is read in the next round.
    private var fillsLeft = 0
    /// `send` returned `.wouldBlock`: the writable handler is owed a call.
    private var owesWritable = false
    /// A write found the peer gone (EPIPE, ECONNRESET): nothing more is sent, and what it
    /// sent before is read to its end of file (then `peerGone`) rather than dropped with
    /// the socket; the kernel hands queued messages out before the end of file.
    private var draining = false

    public init(spec: BackendSpec, kind: String, name: String, fd: Int32, linkHeaderLength: Int = 0,
                eventLoop: NetEventLoop) throws(NetBackendError) {
        precondition(linkHeaderLength == 0 || linkHeaderLength == VirtioNetHeader.mergeableLength)
        self.linkHeaderLength = linkHeaderLength
        outgoing = SeqpacketSendBatch(capacity: Self.batchSize, slotSize: maximumFrameLength + linkHeaderLength)
        incoming = SeqpacketReceiveRing(capacity: Self.batchSize, slotSize: maximumFrameLength + linkHeaderLength)
        super.init(spec: spec, kind: kind, name: name, eventLoop: eventLoop)
        try attach(fd: fd)
    }

    deinit { detach() }

    /// Takes `fd` (non-blocking, owned from now on) as the socket and watches it.
    public final func attach(fd newFD: Int32) throws(NetBackendError) {
        detach()
        fd = newFD
        draining = false
        // Room for bursts, so that neither side blocks per batch (a seqpacket socket's
        // buffer counts whole messages). The FORCE variants pass net.core.*mem_max when
        // privileged; without privilege the plain ones apply, capped by those limits.
        // Best effort: a smaller buffer only means more wake-ups.
        _ = try? SocketCall.requestBuffer(fd, send: true, size: 4 << 20, device: name)
        _ = try? SocketCall.requestBuffer(fd, send: false, size: 4 << 20, device: name)
        do {
            socketSource = try eventLoop.watch(fd: fd, name: name) { [weak self] ready in
                guard let self else { return }
                if ready.contains(.write) { self.socketWritable() }
                if ready.contains(.read) {
                    self.fillsLeft = 1
                    self.notifyReceive()
                }
            }
        } catch {
            throw .system(error)
        }
        // A disable from another thread meanwhile is caught up with on the loop thread;
        // the handler itself is never called while receive is disabled.
        if isReceiveEnabled { socketSource?.enable(.read) }
    }

    /// Stops watching and closes the socket; frames queued or read ahead are dropped
    /// (counted as `no_peer`): they belong to that peer.
    public final func detach() {
        socketSource?.cancel()
        socketSource = nil
        if fd >= 0 {
            _ = Glibc.close(fd)
            fd = -1
        }
        statistics.countLostAfterSend(.noPeer, UInt64(outgoing.reset()))
        incoming.reset()
    }

    public override func watchReceive(_ on: Bool) {
        if on { socketSource?.enable(.read) } else { socketSource?.disable(.read) }
    }

    /// Frames read ahead and not handed out yet: no event announces them.
    public override var hasBufferedFrames: Bool { fd >= 0 && !incoming.isEmpty }

    /// A message on a link with headers that is shorter than any frame: true when the
    /// subclass took it as a control message. The default takes none.
    open func control(_ bytes: UnsafeRawPointer, length: Int) -> Bool { false }

    /// Called on the loop thread when the peer closed its end or reset. The default
    /// throws `.deviceGone`; a subclass may re-attach instead and return normally.
    open func peerGone(_ why: String) throws(NetBackendError) {
        throw .deviceGone("\(name): \(why)")
    }

    // MARK: sending

    public override func send(_ frame: UnsafeBufferPointer<iovec>, more: Bool) throws(NetBackendError) -> SendResult {
        guard fd >= 0, !draining else { statistics.countDrop(.noPeer); return .dropped(.noPeer) }
        let length = IOVectors.length(of: frame)
        let linkLength = length - vnetHeaderLength + linkHeaderLength
        guard length >= vnetHeaderLength + 14 else { statistics.countDrop(.truncated); return .dropped(.truncated) }
        guard linkLength <= outgoing.slotSize else { statistics.countDrop(.malformed); return .dropped(.malformed) }
        if outgoing.isFull {
            try writeBatch()
            if fd < 0 || draining {
                statistics.countDrop(.noPeer)
                return .dropped(.noPeer)
            }
            if outgoing.isFull {
                owesWritable = true
                return .wouldBlock
            }
        }
        outgoing.append(frame, length: length, headerLength: vnetHeaderLength, linkHeaderLength: linkHeaderLength)
        statistics.frames &+= 1
        statistics.bytes &+= UInt64(length)
        // A full batch goes out at once, so that the peer starts on it.
        if !more || outgoing.isFull { try writeBatch() }
        return .sent(length)
    }

    public override func flush() throws(NetBackendError) {
        if outgoing.pending > 0 { try writeBatch() }
    }

    /// Writes the batch; a full socket keeps the rest and asks for a writable callback.
    private func writeBatch() throws(NetBackendError) {
        while fd >= 0 && !draining {
            switch outgoing.write(fd: fd, device: name) {
            case .done:
                return
            case .full:
                socketSource?.enable(.write)
                return
            case .failed(let e, let dropped):
                switch e {
                case EMSGSIZE:
                    // That one message is lost (sent before: the relay did not count it);
                    // the rest of the batch goes on.
                    statistics.countLostAfterSend(.oversized)
                case EPIPE, ECONNRESET:
                    // The peer left: what it sent before leaving is read to its end of file
                    // first (draining); what we still owed it is lost.
                    statistics.countLostAfterSend(.noPeer, UInt64(dropped))
                    draining = true
                    socketSource?.disable(.write)
                    if owesWritable {
                        // The sender waits for writable; let it retry (it now gets no_peer drops).
                        owesWritable = false
                        eventLoop.execute { [weak self] in self?.notifyWritable() }
                    }
                    return
                case ENOTCONN:
                    statistics.countLostAfterSend(.noPeer, UInt64(dropped))
                    try peerGone("the peer closed its socket")
                    return
                default:
                    statistics.countLostAfterSend(.noPeer, UInt64(dropped))
                    throw .system(SystemCallError(call: "sendmmsg", device: name, errno: e))
                }
            }
        }
    }

    /// The socket can take more: write what is queued, then resume a blocked sender.
    private func socketWritable() {
        socketSource?.disable(.write)
        do throws(NetBackendError) {
            try writeBatch()
        } catch {
            // Nobody up the stack to throw to here: end the loop as a relay would.
            eventLoop.stop(throwing: error)
            return
        }
        guard !outgoing.isFull, owesWritable else { return }
        owesWritable = false
        notifyWritable()
    }

    // MARK: receiving

    public override func receive(into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> ReceiveResult {
        while true {
            guard fd >= 0 else { return .empty }
            if incoming.isEmpty {
                if fillsLeft == 0 { return .empty }
                fillsLeft -= 1
                let n: Int
                do { n = try incoming.fill(fd: fd, device: name) } catch {
                    guard error.errno == ECONNRESET else { throw .system(error) }
                    try peerGone("the peer reset its socket")
                    return .empty
                }
                if n == 0 { return .empty }
            }
            guard let slot = incoming.peek() else { return .empty }
            incoming.removeFirst()
            if slot.length == 0 {
                // Frames are never empty: this is the peer's end of file.
                incoming.reset()
                try peerGone("the peer closed its socket")
                return .empty
            }
            if slot.truncated {
                statistics.countDrop(.oversized)   // longer than any frame
                return .dropped(length: slot.length, reason: .oversized)
            }
            let l = linkHeaderLength, h = vnetHeaderLength
            // On netbe's own link a message shorter than any frame is a control message.
            if l > 0 && slot.length < l + 14 {
                if control(slot.bytes, length: slot.length) { continue }
                statistics.countDrop(.truncated)
                return .dropped(length: slot.length, reason: .truncated)
            }
            // Shorter than an Ethernet header (after the link's own header): never a frame,
            // whichever header the frontend takes.
            guard slot.length >= l + 14 else {
                statistics.countDrop(.truncated)
                return .dropped(length: slot.length, reason: .truncated)
            }
            if l == h { return deliver(slot.bytes, length: slot.length, into: buffers) }
            // The link's 12-byte header becomes the frontend's 10 bytes, or none. A frame
            // that needs the header it would lose (sent by the helper just before a
            // renegotiation took offloads away) is dropped; TCP sends it again.
            if h == 0 && slot.bytes.loadUnaligned(as: UInt16.self) != 0 {
                statistics.countDrop(.offloadUnsupported)
                return .dropped(length: slot.length - l, reason: .offloadUnsupported)
            }
            var out = IOVectorWriter(buffers)
            let length = slot.length - l + h
            guard out.write(slot.bytes, h), out.write(slot.bytes + l, slot.length - l) else {
                statistics.countDrop(.noSpace)
                return .dropped(length: length, reason: .noSpace)
            }
            return .frame(length: length)
        }
    }

    public override func peekReceiveLength() throws(NetBackendError) -> Int {
        guard fd >= 0 else { return 0 }
        if let slot = incoming.peek() { return slot.length - linkHeaderLength + vnetHeaderLength }
        // A reset shows at the next `receive`; here it only means nothing to peek.
        guard case .processed(let n)? = try? Syscall.recv(fd, nil, 0, flags: cnb_MSG_PEEK | cnb_MSG_TRUNC | cnb_MSG_DONTWAIT,
                                                           device: name), n > 0 else { return 0 }
        return n - linkHeaderLength + vnetHeaderLength
    }

    public override func close() {
        super.close()
        detach()
    }
}
