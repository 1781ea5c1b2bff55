import Logging
#if canImport(Glibc)
import Glibc
#endif

/// A stream socket carrying `[u32 big-endian length][frame]` records: QEMU's
/// `-netdev stream` (and the older `socket`), passt, gvproxy `-listen-qemu`
/// (framing as in QEMU's docs/system/invocation, "-netdev stream", and passt(1)).
/// Options: `listen=ADDR` or `connect=ADDR` (`unix:PATH`, `tcp:HOST:PORT`),
/// `reconnect=SECONDS` (connect only: retry with backoff up to that delay), and
/// `vnet=on`, which puts the 12-byte virtio-net header in every record so that two
/// netbe processes pass GSO frames whole (never towards QEMU or passt, which send none).
///
/// One peer at a time: a listener accepts the next when its peer leaves. While no peer is
/// attached `isLinkUp` is false and frames sent here are dropped as `no_peer`.
public final class StreamBackend: NetBackend, @unchecked Sendable {
    public static let kind = BackendKind(
        name: "stream", prefixes: ["stream"],
        summary: "length-prefixed frames on a unix or TCP stream (QEMU -netdev stream, passt, gvproxy)",
        check: { (spec) throws(NetBackendError) in _ = try StreamBackend.options(spec) },
        open: { (spec, loop) throws(NetBackendError) in try StreamBackend(spec: spec, eventLoop: loop) }
    )

    enum Role {
        case listen
        case connect(reconnectSeconds: Int)
        /// Connections handed in by `owner` (StreamAdoption.swift), e.g. passt's socketpair.
        case adopted
    }

    let address: NetSocketAddress
    let resolved: ResolvedSocketAddress
    let role: Role
    let vnet: Bool
    var log: Logger { logger }

    // The attached peer, if any.
    var connectionFD: Int32 = -1
    var connectionSource: EventSource?
    var peerName = ""
    let input: StreamInput
    let output: StreamOutput
    /// The relay got `.wouldBlock` and waits for `notifyWritable`.
    var senderWaiting = false
    /// `output` could not be written out completely; writable is armed.
    var outputBlocked = false
    /// A write found the peer gone: nothing more is sent, what it sent is read to its end
    /// of file before the connection is dropped (StreamDrain.swift).
    var draining = false
    /// Ends a drain whose peer stopped reading but never closes (made at the first drain).
    var drainTimer: OneShotTimer?

    // Listener state (role .listen).
    var listenFD: Int32 = -1
    var listenSource: EventSource?
    /// Re-enables the listener after accept ran out of descriptors (StreamListener).
    var acceptRetry: OneShotTimer?
    var acceptStalled = false
    var boundUnixPath: String?
    // Connector state (role .connect).
    var retrySource: EventSource?
    var connectingFD: Int32 = -1
    var connectingSource: EventSource?
    var backoffMilliseconds = 100
    // Owner state (role .adopted): told when the peer leaves and when the backend closes.
    var owner: (any StreamPeerOwner)?

    let lengthPrefix: UnsafeMutablePointer<UInt32>
    let sendVector: UnsafeMutablePointer<iovec>
    static let sendVectorCapacity = 65
    private let minimumLength: Int

    /// Opens the backend a spec describes: a listener is bound and listening, a connecting
    /// side connected once, when this returns. Bad options throw `.badSpec`; a refused or
    /// failed first connection throws `.system` (netbe exits 1).
    public init(spec: BackendSpec, eventLoop: NetEventLoop) throws(NetBackendError) {
        (address, role, vnet) = try Self.options(spec)
        resolved = try address.resolve()
        let header = vnet ? VirtioNetHeader.mergeableLength : 0
        minimumLength = header + 14
        input = StreamInput(maximumLength: maximumFrameLength + header)
        output = StreamOutput(capacity: Self.gatherFlushSize + 4 + maximumFrameLength + header + 64)
        lengthPrefix = .allocate(capacity: 1)
        sendVector = .allocate(capacity: Self.sendVectorCapacity)
        super.init(spec: spec, kind: "stream", name: address.description, eventLoop: eventLoop)
        do throws(NetBackendError) {
            switch role {
            case .listen: try startListening()
            case .connect: try connectFirstTime()
            case .adopted: break
            }
        } catch {
            close()
            throw error
        }
    }

    /// The spec's options, checked without opening anything.
    static func options(_ spec: BackendSpec) throws(NetBackendError) -> (NetSocketAddress, Role, Bool) {
        let r = SpecReader(spec)
        let listenText = try r.string("listen")
        let connectText = try r.string("connect")
        let reconnect = try r.int("reconnect", in: 0...3600)
        let vnet = try r.bool("vnet", default: false)
        try r.finish(kind: "stream")
        func bad(_ why: String) -> NetBackendError { .badSpec("bad spec '\(spec.text)': \(why)") }
        let address: NetSocketAddress
        let role: Role
        switch (listenText, connectText) {
        case (let l?, nil):
            if reconnect != nil { throw bad("reconnect= goes with connect=, not listen=") }
            address = try NetSocketAddress(parsing: l)
            role = .listen
        case (nil, let c?):
            address = try NetSocketAddress(parsing: c)
            role = .connect(reconnectSeconds: reconnect ?? 0)
        case (nil, nil): throw bad("give listen=ADDR or connect=ADDR")
        default: throw bad("give listen= or connect=, not both")
        }
        if case .udp = address { throw bad("a stream needs a unix: or tcp: address, not udp:") }
        return (address, role, vnet)
    }

    /// A stream whose connected descriptor comes from `owner` instead of listen=/connect=
    /// (passt: one end of a socketpair whose other end the child holds); plain framing,
    /// no header. Later descriptors arrive through `attach(fd:peer:)`.
    init(adopting fd: Int32, peer: String, owner: any StreamPeerOwner, spec: BackendSpec, kind: String, name: String,
         eventLoop: NetEventLoop) throws(NetBackendError) {
        address = .unix(path: peer)
        resolved = ResolvedSocketAddress()
        role = .adopted
        vnet = false
        minimumLength = 14
        input = StreamInput(maximumLength: maximumFrameLength)
        output = StreamOutput(capacity: Self.gatherFlushSize + 4 + maximumFrameLength + 64)
        lengthPrefix = .allocate(capacity: 1)
        sendVector = .allocate(capacity: Self.sendVectorCapacity)
        self.owner = owner
        super.init(spec: spec, kind: kind, name: name, eventLoop: eventLoop)
        do throws(NetBackendError) { try attach(fd: fd, peer: peer) } catch {
            close()
            throw error
        }
    }

    deinit {
        close()
        lengthPrefix.deallocate()
        sendVector.deallocate()
    }

    // MARK: capabilities

    /// With `vnet=on`, every offload: the header travels to a netbe peer whose tap applies it.
    public override var capabilities: VirtioNetFeatures {
        vnet ? VirtioNetFeatures.guestOffloads.union(.hostOffloads).union(.mrgRxbuf) : []
    }

    /// With `vnet=on` every record carries the 12-byte header: the frontend must use it.
    public override var supportedHeaderLengths: [Int] { vnet ? [VirtioNetHeader.mergeableLength] : [0] }

    public override func configure(features: VirtioNetFeatures, vnetHeaderLength length: Int) throws(NetBackendError) -> Int {
        if vnet && length != VirtioNetHeader.mergeableLength {
            throw .invalidArgument("\(name): vnet=on carries a 12-byte virtio-net header; a frontend length of \(length) cannot be used")
        }
        return vnet ? length : 0
    }

    /// Up while a peer is attached.
    public override var isLinkUp: Bool { connectionFD >= 0 }

    // MARK: peer attach / detach

    /// Makes `fd` (connected, non-blocking) the peer and shows link up.
    func attach(fd: Int32, peer: String) throws(NetBackendError) {
        if case .tcp = address {
            do { try SocketCall.noDelay(fd, device: peer) } catch { Glibc.close(fd); throw .system(error) }
        }
        let source: EventSource
        do {
            source = try eventLoop.watch(fd: fd, name: "stream \(peer)") { [weak self] ready in
                self?.connectionReady(ready)
            }
        } catch {
            Glibc.close(fd)
            throw .system(error)
        }
        connectionFD = fd
        connectionSource = source
        peerName = peer
        input.reset()
        output.reset()
        outputBlocked = false
        draining = false
        backoffMilliseconds = 100
        if isReceiveEnabled { source.enable(.read) }
        log.info("\(name): peer \(peer) attached")
        notifyLinkState(true)
    }

    /// Drops the peer (it left, or sent something that cannot be a frame), shows link
    /// down, and then waits for the next one: accept again, or reconnect. A connecting
    /// side without `reconnect=` throws, which ends `netbe` with status 1.
    func detach(_ why: String, badInput: Bool) throws(NetBackendError) {
        guard connectionFD >= 0 else { return }
        if badInput {
            log.warning("\(name): dropping peer \(peerName): \(why)")
        } else {
            log.info("\(name): peer \(peerName) left: \(why)")
        }
        connectionSource?.cancel()
        connectionSource = nil
        Glibc.close(connectionFD)
        connectionFD = -1
        input.reset()
        output.reset()
        outputBlocked = false
        draining = false
        drainTimer?.disarm()
        notifyLinkState(false)
        if senderWaiting {
            // The relay waits for writable; let it retry (it now gets no_peer drops).
            senderWaiting = false
            eventLoop.execute { [weak self] in self?.notifyWritable() }
        }
        switch role {
        case .listen:
            listenSource?.enable(.read)
        case .connect(let seconds):
            guard seconds > 0 else {
                throw .deviceGone("\(name): peer \(peerName) is gone (\(why)) and reconnect= is not set")
            }
            scheduleReconnect()
        case .adopted:
            owner?.streamPeerLeft(why)
        }
    }

    /// The same from an event handler, where an error can only stop the loop.
    func detachFromHandler(_ why: String, badInput: Bool) {
        do throws(NetBackendError) { try detach(why, badInput: badInput) } catch { eventLoop.stop(throwing: error) }
    }

    private func connectionReady(_ ready: NetEventLoop.Interest) {
        if ready.contains(.write) {
            connectionSource?.disable(.write)
            writable()
        }
        if ready.contains(.read) && connectionFD >= 0 {
            notifyReceive()
        }
    }

    private func writable() {
        guard connectionFD >= 0, !draining else { return }
        do {
            if try !output.flush(to: connectionFD, device: peerName) {
                connectionSource?.enable(.write)
                return
            }
            outputBlocked = false
        } catch {
            do throws(NetBackendError) { try writeFailed(error) } catch { eventLoop.stop(throwing: error) }
            return
        }
        if senderWaiting {
            senderWaiting = false
            notifyWritable()
        }
    }

    // MARK: receive

    public override func watchReceive(_ on: Bool) {
        if on { connectionSource?.enable(.read) } else { connectionSource?.disable(.read) }
    }

    /// Whole frames may sit in the buffer after the frontend stopped at its batch limit
    /// while the socket itself is drained: epoll would not call again.
    public override var hasBufferedFrames: Bool { connectionFD >= 0 && input.holdsWholeFrame }

    /// Hands out the next whole record from the connection's buffer, reading the socket
    /// only when none is buffered. A record shorter than an Ethernet header is dropped as
    /// `truncated`; a stream that cannot be framed any more drops the peer (`.empty`).
    public override func receive(into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> ReceiveResult {
        while connectionFD >= 0 {
            switch input.next() {
            case .frame(let bytes, let length):
                defer { input.consume(length) }
                if length < minimumLength {
                    statistics.countDrop(.truncated)
                    return .dropped(length: length, reason: .truncated)
                }
                return deliver(bytes, length: length, into: buffers)
            case .bad(let why):
                try detach(why, badInput: true)
            case .needMore:
                let fill: StreamInput.Fill
                do { fill = try input.fill(from: connectionFD, device: peerName) } catch {
                    try detach("\(error)", badInput: false)
                    continue
                }
                switch fill {
                case .read: continue
                case .wouldBlock: return .empty
                case .endOfStream:
                    if input.isEmpty {
                        try detach("it closed the connection", badInput: false)
                    } else {
                        // The cut frame is a drop the report shows (`truncated`).
                        let cut = input.bufferedBytes
                        statistics.countDrop(.truncated)
                        try detach("it closed the connection in the middle of a frame (\(cut) bytes pending)", badInput: true)
                        return .dropped(length: cut, reason: .truncated)
                    }
                }
            }
        }
        return .empty
    }

    public override func peekReceiveLength() throws(NetBackendError) -> Int {
        while connectionFD >= 0 {
            switch input.next() {
            case .frame(_, let length): return length
            case .bad: return 0   // `receive` drops the peer and says why
            case .needMore:
                guard (try? input.fill(from: connectionFD, device: peerName)) == .read else { return 0 }
            }
        }
        return 0
    }

    // MARK: send (StreamSender.swift)

    /// Sends one record: gathered when small and `more` follow, else written at once with
    /// writev. `no_peer` without a peer; `.wouldBlock` while earlier bytes are still owed.
    public override func send(_ frame: UnsafeBufferPointer<iovec>, more: Bool) throws(NetBackendError) -> SendResult {
        try sendRecord(frame, more: more)
    }

    /// Ends a relay batch: the gathered records go out in one write.
    public override func flush() throws(NetBackendError) { try flushBatch() }

    // MARK: close

    /// Closes every socket and removes the unix socket file this backend bound.
    public override func close() {
        super.close()
        acceptRetry?.cancel()
        acceptRetry = nil
        retrySource?.cancel()
        retrySource = nil
        drainTimer?.cancel()
        drainTimer = nil
        connectingSource?.cancel()
        connectingSource = nil
        if connectingFD >= 0 { Glibc.close(connectingFD); connectingFD = -1 }
        connectionSource?.cancel()
        connectionSource = nil
        if connectionFD >= 0 { Glibc.close(connectionFD); connectionFD = -1 }
        listenSource?.cancel()
        listenSource = nil
        if listenFD >= 0 { Glibc.close(listenFD); listenFD = -1 }
        if let path = boundUnixPath {
            // CONTRACT: the sockets netbe created are removed when it stops.
            unlink(path)
            boundUnixPath = nil
        }
        // After our end is closed: passt, holding the other, sees end of file first.
        owner?.streamClosing()
        owner = nil
    }
}
