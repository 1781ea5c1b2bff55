import CSlirp
#if canImport(Glibc)
import Glibc
#endif

/// Inside the slirp helper process: joins the seqpacket socket from netbe's main process
/// to the libslirp stack, without a `Relay` in between so that no frame is copied in
/// user space more than libslirp's own queue needs.
///
/// - Socket to libslirp: one `recvmmsg` reads up to a batch of frames into a
///   `SeqpacketReceiveRing`, each handed to `slirp_input` from its slot; the frames
///   libslirp answers with (ACKs) go out right after the batch.
/// - libslirp to socket: frames wait in the stack's `SlirpFrameQueue`; one `sendmmsg`
///   writes up to a batch straight from the queue's slots, after every input batch, at
///   the end of every loop round (`SlirpStack.framesQueued`) and when the queue's
///   eventfd says frames wait. A full socket stops the writing until it is writable;
///   meanwhile libslirp's frames wait in the queue (dropped only when it is full).
/// - End of file or a reset on the socket: the main process is gone; the loop stops.
final class SlirpHelperLink: @unchecked Sendable {
    let fd: Int32
    let stack: SlirpStack
    private let loop: EventLoop
    private let incoming = SeqpacketReceiveRing(capacity: SeqpacketBackend.batchSize, slotSize: maximumFrameLength)
    private let batch = SeqpacketBackend.batchSize
    private let vectors: UnsafeMutablePointer<iovec>
    private let headers: UnsafeMutablePointer<netbe_mmsghdr>
    private var socketSource: EventSource?
    private var queueSource: EventSource?
    private var blocked = false
    /// Frames read per readiness callback before the loop round goes on (level-triggered).
    private let inputBudget = 4 * SeqpacketBackend.batchSize

    /// `fd`: the helper's end of the socketpair, non-blocking.
    init(fd: Int32, stack: SlirpStack, eventLoop: EventLoop) throws(NetBackendError) {
        self.fd = fd
        self.stack = stack
        loop = eventLoop
        vectors = .allocate(capacity: batch)
        vectors.initialize(repeating: iovec(), count: batch)
        headers = .allocate(capacity: batch)
        for i in 0..<batch {
            var h = netbe_mmsghdr()
            h.msg_hdr.msg_iov = vectors + i
            h.msg_hdr.msg_iovlen = 1
            headers[i] = h
        }
        // Best effort: a smaller buffer only means more wake-ups.
        _ = try? SocketCall.requestBuffer(fd, send: true, size: 4 << 20, device: "slirp helper socket")
        _ = try? SocketCall.requestBuffer(fd, send: false, size: 4 << 20, device: "slirp helper socket")
        do {
            socketSource = try eventLoop.watch(fd: fd, name: "netbe main process") { [unowned self] ready in
                if ready.contains(.write) { self.socketWritable() }
                if ready.contains(.read) { self.socketReadable() }
            }
            queueSource = try eventLoop.watch(fd: stack.queue.readyFD, name: "slirp frames") { [unowned self] _ in
                self.writeQueued()
            }
        } catch {
            socketSource?.cancel()
            throw .system(error)
        }
    }

    deinit {
        vectors.deallocate()
        headers.deallocate()
    }

    /// Starts moving frames (after the handshake).
    func start() {
        stack.framesQueued = { [unowned self] in self.writeQueued() }
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
                let n = incoming.fill(fd: fd)
                if n < 0 {
                    switch errno {
                    case EINTR: continue
                    case EAGAIN: break
                    case ECONNRESET: loop.stop()   // the main process is gone
                    default: loop.stop(throwing: NetBackendError.system(SystemCallError(call: "recvmmsg", device: "slirp helper socket", errno: errno)))
                    }
                    break reading
                }
                if n == 0 { break reading }
            }
            while let slot = incoming.peek() {
                incoming.removeFirst()
                if slot.length == 0 {
                    // Frames are never empty: end of file, the main process is gone.
                    incoming.reset()
                    loop.stop()
                    return
                }
                // Shorter than an Ethernet header or cut: not a frame libslirp can take.
                if slot.length >= 14 && !slot.truncated { stack.input(slot.bytes, length: slot.length) }
                budget -= 1
            }
        }
        writeQueued()
    }

    /// Writes waiting frames from the queue's slots, a batch per `sendmmsg`.
    private func writeQueued() {
        let queue = stack.queue
        while !blocked && !queue.isEmpty {
            let n = min(queue.waiting, batch)
            for i in 0..<n {
                let f = queue.frame(at: i)
                vectors[i] = iovec(iov_base: f.bytes, iov_len: f.length)
            }
            let sent = netbe_sendmmsg(fd, headers, UInt32(n), Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
            if sent > 0 {
                queue.removeFirst(Int(sent))
                continue
            }
            switch errno {
            case EINTR:
                continue
            case EAGAIN, ENOBUFS:
                // Frames stay queued; the socket's writable callback resumes.
                blocked = true
                queueSource?.disable(.read)
                socketSource?.enable(.write)
            case EMSGSIZE:
                queue.removeFirst(1)
            case EPIPE, ECONNRESET, ENOTCONN:
                loop.stop()   // the main process is gone
                return
            default:
                loop.stop(throwing: NetBackendError.system(SystemCallError(call: "sendmmsg", device: "slirp helper socket", errno: errno)))
                return
            }
        }
    }

    private func socketWritable() {
        socketSource?.disable(.write)
        blocked = false
        queueSource?.enable(.read)
        writeQueued()
    }
}
