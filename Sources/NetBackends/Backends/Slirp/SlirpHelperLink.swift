import CNetBackends
import CSlirp
#if canImport(Glibc)
import Glibc
#endif

/// Inside the slirp helper process: joins the seqpacket socket from netbe's main process
/// to the libslirp stack, without a `Relay` in between so that no frame is copied in
/// user space more than libslirp's own queue needs.
///
/// Every message on the link starts with a 12-byte virtio-net header (see
/// `SeqpacketBackend.linkHeaderLength`); a message too short to be a frame is a control
/// message, of which there is one: `featuresMessage`, what the frontend accepted.
///
/// - Socket to libslirp: one `recvmmsg` reads up to a batch of frames into a
///   `SeqpacketReceiveRing`; each goes through `SlirpStack.input` (checksums finished,
///   TSO frames cut) from its slot; the frames libslirp answers with go out after the batch.
/// - libslirp to socket: frames wait in the stack's `SlirpFrameQueue`; one `sendmmsg`
///   writes up to a batch of messages straight from the queue's slots (a message is a
///   header and one frame, or, when the frontend takes TSO, a run of TCP segments joined
///   by `TCPCoalescer`: built headers and the segments' payloads in place). Pure ACKs a
///   later one covers are skipped. Writing happens after every input batch, at the end of
///   every loop round (`SlirpStack.framesQueued`) and when the queue's eventfd says frames
///   wait. A full socket stops the writing until it is writable; meanwhile libslirp's
///   frames wait in the queue (dropped only when it is full).
/// - End of file or a reset on the socket: the main process is gone; the loop stops.
final class SlirpHelperLink: @unchecked Sendable {
    let fd: Int32
    let stack: SlirpStack
    private let loop: NetEventLoop
    private static let header = VirtioNetHeader.mergeableLength
    private let incoming = SeqpacketReceiveRing(capacity: SeqpacketBackend.batchSize,
                                                slotSize: maximumFrameLength + SlirpHelperLink.header)
    private let batch = SeqpacketBackend.batchSize
    /// Per message: a built-header iovec, then up to `maximumSegments` payload iovecs.
    private static let vectorsPerMessage = 1 + TCPCoalescer.maximumSegments
    private static let builtSize = TCPCoalescer.scratchSize
    private let vectors: UnsafeMutablePointer<iovec>
    private let headers: UnsafeMutablePointer<cnb_mmsghdr>
    /// Per message: the virtio-net header and, for a run, the super-frame's headers.
    private let built: UnsafeMutableRawPointer
    /// Per message: how many queued frames it carries (skipped ACKs included).
    private let framesPerMessage: UnsafeMutablePointer<Int>
    private var socketSource: EventSource?
    private var queueSource: EventSource?
    private var blocked = false
    private var coalesceIPv4 = false
    private var coalesceIPv6 = false
    /// Frames read per readiness callback before the loop round goes on (level-triggered).
    private let inputBudget = 4 * SeqpacketBackend.batchSize
    /// Frames lost in this process: netbe's frames that libslirp could not take (or that
    /// arrived cut or too long), libslirp's that found the queue full or the socket
    /// refusing them. netbe has the report, so the totals go there as `dropsMessage`s.
    private let drops = BackendStatistics()
    private var reportedTotal: UInt64 = 0
    private var reported = [UInt64](repeating: 0, count: 2 * DropReason.allCases.count)

    /// A drops report to netbe: "D", "s" (frames netbe sent, lost here) or "r" (frames
    /// for netbe, lost here), the reason's raw value, and the running total as a
    /// little-endian UInt64: 11 bytes, shorter than any frame message.
    static let dropsMessageLength = 11

    /// Reads a drops report: (lost after netbe sent them, reason, total); nil if it is none.
    static func parseDropsMessage(_ bytes: UnsafeRawPointer, length: Int) -> (afterSend: Bool, reason: DropReason, total: UInt64)? {
        guard length == dropsMessageLength, bytes.load(as: UInt8.self) == UInt8(ascii: "D") else { return nil }
        let kind = bytes.load(fromByteOffset: 1, as: UInt8.self)
        guard kind == UInt8(ascii: "s") || kind == UInt8(ascii: "r"),
              let reason = DropReason(rawValue: Int(bytes.load(fromByteOffset: 2, as: UInt8.self))) else { return nil }
        return (kind == UInt8(ascii: "s"), reason, UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 3, as: UInt64.self)))
    }

    /// The control message that tells the helper what the frontend accepted: "O" and the
    /// features as a little-endian UInt64 (9 bytes, shorter than any frame message).
    static func featuresMessage(_ features: VirtioNetFeatures) -> [UInt8] {
        [UInt8(ascii: "O")] + withUnsafeBytes(of: features.rawValue.littleEndian) { Array($0) }
    }

    /// `fd`: the helper's end of the socketpair, non-blocking.
    init(fd: Int32, stack: SlirpStack, eventLoop: NetEventLoop) throws(NetBackendError) {
        self.fd = fd
        self.stack = stack
        loop = eventLoop
        vectors = .allocate(capacity: batch * Self.vectorsPerMessage)
        vectors.initialize(repeating: iovec(), count: batch * Self.vectorsPerMessage)
        headers = .allocate(capacity: batch)
        built = .allocate(byteCount: batch * Self.builtSize, alignment: 64)
        framesPerMessage = .allocate(capacity: batch)
        framesPerMessage.initialize(repeating: 0, count: batch)
        stack.queue.statistics = drops
        for i in 0..<batch {
            var h = cnb_mmsghdr()
            h.msg_hdr.msg_iov = vectors + i * Self.vectorsPerMessage
            h.msg_hdr.msg_iovlen = 2
            headers[i] = h
        }
        // Best effort: a smaller buffer only means more wake-ups.
        _ = try? SocketCall.requestBuffer(fd, send: true, size: 4 << 20, device: "slirp helper socket")
        _ = try? SocketCall.requestBuffer(fd, send: false, size: 4 << 20, device: "slirp helper socket")
        do {
            socketSource = try eventLoop.watch(fd: fd, name: "netbe main process") { [weak self] ready in
                guard let self else { return }
                if ready.contains(.write) { self.socketWritable() }
                if ready.contains(.read) { self.socketReadable() }
            }
            queueSource = try eventLoop.watch(fd: stack.queue.readyFD, name: "slirp frames") { [weak self] _ in
                self?.writeQueued()
            }
        } catch {
            socketSource?.cancel()
            throw .system(error)
        }
    }

    deinit {
        vectors.deallocate()
        headers.deallocate()
        built.deallocate()
        framesPerMessage.deallocate()
    }

    /// Starts moving frames (after the handshake).
    func start() {
        stack.framesQueued = { [weak self] in self?.writeQueued() }
        socketSource?.enable(.read)
        queueSource?.enable(.read)
    }

    func close() {
        stack.framesQueued = nil
        socketSource?.cancel()
        queueSource?.cancel()
        socketSource = nil
        queueSource = nil
    }

    private func socketReadable() {
        var budget = inputBudget
        reading: while budget > 0 {
            if incoming.isEmpty {
                let n: Int
                do { n = try incoming.fill(fd: fd, device: "slirp helper socket") } catch {
                    if error.errno == ECONNRESET { loop.stop() } else { loop.stop(throwing: NetBackendError.system(error)) }   // reset: the main process is gone
                    break reading
                }
                if n == 0 { break reading }
            }
            while let slot = incoming.peek() {
                incoming.removeFirst()
                budget -= 1
                if slot.length == 0 {
                    // Frames are never empty: end of file, the main process is gone.
                    incoming.reset()
                    loop.stop()
                    return
                }
                if slot.truncated {
                    drops.countLostAfterSend(.oversized)   // longer than any frame
                    continue
                }
                if slot.length < Self.header + 14 {
                    if !control(slot.bytes, length: slot.length) { drops.countLostAfterSend(.truncated) }
                    continue
                }
                // What libslirp cannot take is dropped here, after netbe counted it as sent:
                // the drop is reported back (`reportDrops`).
                if case .dropped(let reason) = stack.input(frame: slot.bytes + Self.header, length: slot.length - Self.header,
                                                          header: slot.bytes) {
                    drops.countLostAfterSend(reason)
                }
            }
        }
        writeQueued()
    }

    /// Sends netbe the totals that changed since the last report. A full socket leaves
    /// them for the next round (totals, not increments: nothing is counted twice).
    private func reportDrops() {
        let total = drops.totalDrops
        guard total != reportedTotal else { return }
        var complete = true
        for reason in DropReason.allCases {
            for afterSend in [true, false] {
                let now = afterSend ? drops.lostAfterSend(reason) : drops.lostBeforeReceive(reason)
                let i = (afterSend ? 0 : DropReason.allCases.count) + reason.rawValue
                guard now != reported[i] else { continue }
                var message = [UInt8](repeating: 0, count: Self.dropsMessageLength)
                message[0] = UInt8(ascii: "D")
                message[1] = afterSend ? UInt8(ascii: "s") : UInt8(ascii: "r")
                message[2] = UInt8(reason.rawValue)
                message.withUnsafeMutableBytes { $0.storeBytes(of: now.littleEndian, toByteOffset: 3, as: UInt64.self) }
                let sent = message.withUnsafeBytes {
                    try? Syscall.send(fd, $0.baseAddress, $0.count, flags: cnb_MSG_DONTWAIT | cnb_MSG_NOSIGNAL, device: "slirp helper socket")
                }
                if sent == .processed(Self.dropsMessageLength) { reported[i] = now } else { complete = false }
            }
        }
        if complete { reportedTotal = total }
    }

    /// A control message from the main process; false when it is none (a cut frame).
    private func control(_ bytes: UnsafeRawPointer, length: Int) -> Bool {
        guard length == 9, bytes.load(as: UInt8.self) == UInt8(ascii: "O") else { return false }
        let features = VirtioNetFeatures(rawValue: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 1, as: UInt64.self)))
        coalesceIPv4 = features.isSuperset(of: [.guestCsum, .guestTSO4])
        coalesceIPv6 = features.isSuperset(of: [.guestCsum, .guestTSO6])
        return true
    }

    /// Writes waiting frames from the queue's slots, a batch of messages per `sendmmsg`.
    private func writeQueued() {
        defer { reportDrops() }
        let queue = stack.queue
        while !blocked && !queue.isEmpty {
            let messages = buildMessages()
            let e: Int32
            do {
                if case .processed(let sent) = try Syscall.sendmmsg(fd, headers, messages, flags: cnb_MSG_DONTWAIT | cnb_MSG_NOSIGNAL,
                                                                   device: "slirp helper socket") {
                    var frames = 0
                    for i in 0..<sent { frames += framesPerMessage[i] }
                    queue.removeFirst(frames)
                    continue
                }
                e = EAGAIN
            } catch {
                e = error.errno
            }
            switch e {
            case EAGAIN:
                // Frames stay queued; the socket's writable callback resumes.
                blocked = true
                queueSource?.disable(.read)
                socketSource?.enable(.write)
            case EMSGSIZE:
                // A message (a joined run, or one frame) longer than the socket takes.
                drops.countLostBeforeReceive(.oversized, UInt64(framesPerMessage[0]))
                queue.removeFirst(framesPerMessage[0])
            case EPIPE, ECONNRESET, ENOTCONN:
                loop.stop()   // the main process is gone
                return
            default:
                loop.stop(throwing: NetBackendError.system(SystemCallError(call: "sendmmsg", device: "slirp helper socket", errno: e)))
                return
            }
        }
    }

    /// Fills up to a batch of message headers from the head of the queue; returns how many.
    private func buildMessages() -> Int {
        let queue = stack.queue
        let coalescing = coalesceIPv4 || coalesceIPv6
        var at = 0
        var m = 0
        while m < batch && at < queue.waiting {
            let first = at
            if coalescing { at += TCPCoalescer.supersededAcks(in: queue, from: at) }
            let v = vectors + m * Self.vectorsPerMessage
            let b = built + m * Self.builtSize
            if coalescing, let run = TCPCoalescer.run(in: queue, from: at, maximumLength: maximumFrameLength,
                                                      ipv4: coalesceIPv4, ipv6: coalesceIPv6) {
                headers[m].msg_hdr.msg_iovlen = TCPCoalescer.describe(run, in: queue, from: at, headerLength: Self.header,
                                                                     scratch: b, into: v)
                at += run.count
            } else {
                VirtioNetHeader.convert(from: nil, fromLength: 0, to: b, toLength: Self.header)
                let f = queue.frame(at: at)
                v[0] = iovec(iov_base: b, iov_len: Self.header)
                v[1] = iovec(iov_base: f.bytes, iov_len: f.length)
                headers[m].msg_hdr.msg_iovlen = 2
                at += 1
            }
            framesPerMessage[m] = at - first
            m += 1
        }
        return m
    }

    private func socketWritable() {
        socketSource?.disable(.write)
        blocked = false
        queueSource?.enable(.read)
        writeQueued()
    }
}
