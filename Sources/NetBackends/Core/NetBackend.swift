import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a frame was dropped. Each reason is counted on its own (CONTRACT.md `drops`).
public enum DropReason: Int, CaseIterable, Sendable, CustomStringConvertible {
    /// The receiver's buffer list was shorter than the frame (the seed's -ENOSPC).
    case noSpace
    /// The interface is administratively down (a tap write fails with EIO).
    case linkDown
    /// Larger than the largest legal frame, or rejected by the kernel as malformed.
    case malformed
    /// A GSO frame for a side that cannot take one (negotiation should prevent it).
    case offloadUnsupported
    /// No peer attached to take it (a socket backend between peers).
    case noPeer
    /// Shorter than an Ethernet header, or cut short by the transport.
    case truncated
    /// Longer than the transport takes: refused with EMSGSIZE (a joined super-frame too
    /// big for a socket's buffer), or a message longer than any frame.
    case oversized
    /// A backend's own queue was full (libslirp's output waiting for the frontend).
    case queueFull
    /// An overlay frame for another network (a VXLAN header with another VNI).
    case wrongVNI

    public var description: String {
        switch self {
        case .noSpace: return "no_space"
        case .linkDown: return "link_down"
        case .malformed: return "malformed"
        case .offloadUnsupported: return "offload_unsupported"
        case .noPeer: return "no_peer"
        case .truncated: return "truncated"
        case .oversized: return "oversized"
        case .queueFull: return "queue_full"
        case .wrongVNI: return "wrong_vni"
        }
    }
}

/// The result of `send`: handed over, would block (the backend calls the writable
/// handler once it can take more), or dropped for a counted reason.
public enum SendResult: Equatable, Sendable {
    /// Taken. The count is the frame as the caller handed it over, its virtio-net header
    /// included (`vnetHeaderLength` bytes; none at 0): the same for every backend, whatever
    /// goes on the wire (a tap's hidden header, a stream's length prefix, a link header).
    case sent(Int)
    case wouldBlock
    case dropped(DropReason)
}

/// The result of `receive`: nothing waiting (the seed's 0), one whole frame of `length`
/// bytes (header included when the backend's header length is not 0), or a frame that
/// was consumed and dropped whole, never half-delivered.
public enum ReceiveResult: Equatable, Sendable {
    case empty
    case frame(length: Int)
    case dropped(length: Int, reason: DropReason)
}

/// The largest Ethernet frame a backend passes: a 64 KiB GSO payload limit of 65535 plus
/// an Ethernet header and a VLAN tag. Socket transports reject anything longer.
public let maximumFrameLength = 65535 + 14 + 4

/// A network backend: the seed's `struct net_backend` made a Swift class.
///
/// Frontend API (what a virtual NIC or a relay calls), with the seed's semantics:
/// - `send` hands one frame over as a scatter-gather list; `receive` fills one; both
///   never block. `receive` returns `.empty` when nothing waits.
/// - `setCapabilities(_:vnetHeaderLength:)` accepts 0, 10 or 12 and may be called again at
///   any time (a guest reset renegotiates). Afterwards `vnetHeaderLength` is either 0 or the
///   frontend's length; at 0 the caller adds/strips the virtio-net header itself and must
///   never hand this backend a GSO or NEEDS_CSUM frame.
/// - `enableReceive`/`disableReceive`: after `disableReceive` returns, the receive handler
///   is not running and is not called until `enableReceive` (from another thread too;
///   from inside the handler it returns at once). A frontend that returns from its
///   handler while frames wait, in the kernel or in the backend's own buffers, is
///   called again while receive is enabled.
/// - `removeHandlers` (and `close`) from another thread returns once no handler runs.
/// - All other calls happen on the event loop's thread.
///
/// A backend kind subclasses this and overrides the `open` members; it watches its
/// descriptor with `watch(fd:)` so that readiness reaches the handlers, or watches its
/// own and calls `notifyReceive`, overriding `watchReceive` and `hasBufferedFrames`.
open class NetBackend: @unchecked Sendable {
    public let spec: BackendSpec
    /// The kind's name, e.g. "tap".
    public let kind: String
    public let eventLoop: NetEventLoop
    /// What the backend is attached to, for messages: an interface name, a socket path.
    /// Read on every I/O call (for error messages): no run-time exclusivity check.
    @exclusivity(unchecked) public internal(set) var name: String
    /// The backend's virtio-net header length: 0, or the frontend's (seed: be_vnet_hdr_len).
    /// Read per frame by the relay: no run-time exclusivity check (see BackendStatistics).
    @exclusivity(unchecked) public internal(set) var vnetHeaderLength = 0
    /// The frontend's header length from the last `setCapabilities` (seed: fe_vnet_hdr_len).
    public private(set) var frontendHeaderLength = 0
    public private(set) var negotiatedFeatures: VirtioNetFeatures = []
    public let statistics = BackendStatistics()
    /// The event loop's logger with this backend's kind and name as metadata.
    public let logger: Logger

    private var source: EventSource?
    private let handlers: BackendHandlers
    private var discardBuffer: UnsafeMutableRawPointer?
    /// What the frontend granted in `setCapabilities`, before the backend's own peer
    /// narrowed it (`peerAccepts`).
    private var grantedFeatures: VirtioNetFeatures = []
    private let renegotiation = Mutex<(@Sendable () -> Void)?>(nil)
    /// A call for frames in the backend's own buffers is queued on the loop (loop thread).
    private var resumeScheduled = false
    /// Made once: queued per wake-up, it must not allocate (LoopWork).
    private var resumeWork: LoopWork?
    private var reconcileWork: (@Sendable () -> Void)?

    public init(spec: BackendSpec, kind: String, name: String, eventLoop: NetEventLoop) {
        self.spec = spec
        self.kind = kind
        self.name = name
        self.eventLoop = eventLoop
        var logger = eventLoop.logger
        logger[metadataKey: "backend"] = "\(kind) \(name)"
        self.logger = logger
        handlers = BackendHandlers(loop: eventLoop)
        // Queued work holds the backend weakly: it may be closed and gone by then.
        resumeWork = LoopWork { [weak self] in self?.resumeBufferedFrames() }
        reconcileWork = { [weak self] in self?.reconcileReceive() }
    }

    deinit {
        source?.cancel()
        discardBuffer?.deallocate()
    }

    // MARK: what a kind provides

    /// The virtio-net features this backend can support (seed: get_cap).
    open var capabilities: VirtioNetFeatures { [] }

    /// The header lengths this backend can carry itself; 0 means the caller handles it.
    open var supportedHeaderLengths: [Int] { [0] }

    /// The header length this backend would pick when it may choose (a relay asks).
    open var preferredHeaderLength: Int { supportedHeaderLengths.max() ?? 0 }

    /// True when this backend moves a GSO super-frame for a fraction of what its segments
    /// cost (a tap: one read or write per 64 KiB, and the kernel neither segments nor
    /// reassembles), so that a relay arranges super-frames for it even when the other side
    /// can neither give nor take them: it cuts them (`sw_segmented`) on the way out and
    /// joins the other side's segments on the way in. False for a backend whose offloads
    /// are themselves done in software (slirp).
    open var prefersSuperFrames: Bool { false }

    /// Applies accepted features; returns the backend's header length, 0 or `vnetHeaderLength`.
    open func configure(features: VirtioNetFeatures, vnetHeaderLength: Int) throws(NetBackendError) -> Int { 0 }

    /// Sends one frame. `more` says another frame follows in this batch; a backend that
    /// syncs per batch (rings, kicks) may wait for `flush`.
    open func send(_ frame: UnsafeBufferPointer<iovec>, more: Bool) throws(NetBackendError) -> SendResult {
        fatalError("\(kind) backend does not implement send")
    }

    /// Ends a batch of sends.
    open func flush() throws(NetBackendError) {}

    /// Receives one frame into `buffers`, or `.empty`.
    open func receive(into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> ReceiveResult {
        fatalError("\(kind) backend does not implement receive")
    }

    /// Length of the next frame (with header), 0 when none waits (seed: peek_recvlen).
    open func peekReceiveLength() throws(NetBackendError) -> Int { 0 }

    /// Whether the far end is there to take frames (a socket backend between peers is
    /// down). A relay mirrors it onto the other side with `setCarrier`.
    open var isLinkUp: Bool { true }

    /// Shows link up/down to whatever sits behind this backend (a tap: TUNSETCARRIER).
    /// The default does nothing.
    open func setCarrier(_ up: Bool) throws(NetBackendError) {}

    /// Frames wait in the backend's own memory (read ahead, peeked, buffered), where no
    /// descriptor announces them: while this is true after a receive handler returned,
    /// the backend calls it again. Read on the loop thread.
    open var hasBufferedFrames: Bool { false }

    /// Starts or stops watching where frames come from, after `enableReceive` or
    /// `disableReceive` (the handler calls themselves are already allowed or stopped).
    /// Always on the loop thread. The default turns `watch(fd:)`'s read interest on or off.
    open func watchReceive(_ on: Bool) {
        if on { source?.enable(.read) } else { source?.disable(.read) }
    }

    /// Releases the backend's resources. Idempotent. Disables receive and removes the
    /// handlers first (waiting for a running one, as `disableReceive`).
    open func close() {
        handlers.disableReceive()
        handlers.removeAll()
        renegotiation.withLock { $0 = nil }
        source?.cancel()
        source = nil
    }

    // MARK: the frontend API

    /// Tells the backend which features the frontend accepted and its header length.
    public final func setCapabilities(_ features: VirtioNetFeatures, vnetHeaderLength length: Int) throws(NetBackendError) {
        guard VirtioNetHeader.validLengths.contains(length) else {
            throw .invalidArgument("\(name): virtio-net header length \(length) is not 0, 10 or 12")
        }
        let extra = features.subtracting(capabilities)
        guard extra.isEmpty else {
            throw .invalidArgument("\(name): features \(extra) are not offered by this backend (it offers \(capabilities))")
        }
        let be = try configure(features: features, vnetHeaderLength: length)
        precondition(be == 0 || be == length, "backend header length must be 0 or the frontend's")
        frontendHeaderLength = length
        vnetHeaderLength = be
        negotiatedFeatures = features
        grantedFeatures = features
    }

    /// The backend's own peer (a vhost-user guest, after SET_FEATURES) accepts only
    /// `features` of what the frontend granted; nil: all of it again (a new peer).
    /// `negotiatedFeatures` narrows and the frontend hears of it through the
    /// renegotiation handler, so that its output cuts and finishes checksums for what the
    /// peer no longer takes instead of handing it frames it would drop. Loop thread.
    public final func peerAccepts(_ features: VirtioNetFeatures?) {
        let narrowed = features.map { grantedFeatures.intersection($0) } ?? grantedFeatures
        guard narrowed != negotiatedFeatures else { return }
        negotiatedFeatures = narrowed
        renegotiation.withLock { $0 }?()
    }

    /// Called on the loop thread when `negotiatedFeatures` narrowed or widened after
    /// `setCapabilities` (see `peerAccepts`); nil removes it.
    public final func setRenegotiationHandler(_ handler: (@Sendable () -> Void)?) {
        renegotiation.withLock { $0 = handler }
    }

    /// The convenience most callers want: send a frame held in one buffer.
    @inline(__always)
    public final func send(_ frame: UnsafeRawBufferPointer, more: Bool = false) throws(NetBackendError) -> SendResult {
        var iov = iovec(iov_base: UnsafeMutableRawPointer(mutating: frame.baseAddress), iov_len: frame.count)
        return try withUnsafePointer(to: &iov) { (p) throws(NetBackendError) -> SendResult in
            try send(UnsafeBufferPointer(start: p, count: 1), more: more)
        }
    }

    /// Receives into one buffer.
    @inline(__always)
    public final func receive(into buffer: UnsafeMutableRawBufferPointer) throws(NetBackendError) -> ReceiveResult {
        var iov = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
        return try withUnsafePointer(to: &iov) { (p) throws(NetBackendError) -> ReceiveResult in
            try receive(into: UnsafeBufferPointer(start: p, count: 1))
        }
    }

    /// Reads one frame and throws it away (seed: netbe_rx_discard); `.empty` when none.
    public final func discardReceived() throws(NetBackendError) -> ReceiveResult {
        let size = maximumFrameLength + VirtioNetHeader.mergeableLength + 64
        if discardBuffer == nil { discardBuffer = .allocate(byteCount: size, alignment: 16) }
        return try receive(into: UnsafeMutableRawBufferPointer(start: discardBuffer, count: size))
    }

    /// Called on the loop thread when frames wait; it should `receive` until `.empty`
    /// or until it has done a batch (it is called again while frames wait). Set before
    /// `enableReceive`; nil removes it.
    public final func setReceiveHandler(_ handler: (@Sendable () -> Void)?) {
        handlers.setReceive(handler)
    }

    /// Called on the loop thread when a backend that returned `.wouldBlock` can take more.
    public final func setWritableHandler(_ handler: (@Sendable () -> Void)?) {
        handlers.setWritable(handler)
    }

    /// Called on the loop thread when `isLinkUp` changes (a peer attached or left).
    public final func setLinkStateHandler(_ handler: (@Sendable (_ up: Bool) -> Void)?) {
        handlers.setLinkState(handler)
    }

    /// Removes all three handlers; from another thread it returns once none is running.
    /// A handler that captures its backend (or a relay that holds it) makes a reference
    /// cycle: removing the handlers (or `close`) ends it.
    public final func removeHandlers() {
        handlers.removeAll()
        renegotiation.withLock { $0 = nil }
    }

    /// Whether the frontend has receive enabled.
    public final var isReceiveEnabled: Bool { handlers.receiveEnabled }

    /// Lets the receive handler be called (again) while frames wait. Any thread.
    public final func enableReceive() {
        handlers.enableReceive()
        onLoopThread(reconcileWork!)
    }

    /// See the type's contract: from any thread, no receive callback after this
    /// returns; from inside the handler on the loop thread it returns at once.
    public final func disableReceive() {
        handlers.disableReceive()
        onLoopThread(reconcileWork!)
    }

    /// Runs `work` now on the loop thread, else queues it there (also before `run()`:
    /// the loop may be starting on another thread at this very moment).
    private func onLoopThread(_ work: @escaping @Sendable () -> Void) {
        if eventLoop.inLoopThread { work() } else { eventLoop.execute(work) }
    }

    /// Brings the watched descriptors in line with the receive switch, and asks for a call
    /// when frames already wait in the backend's buffers.
    private func reconcileReceive() {
        let on = handlers.receiveEnabled
        watchReceive(on)
        if on { resumeIfBuffered() }
    }

    private func resumeIfBuffered() {
        guard !resumeScheduled, hasBufferedFrames else { return }
        resumeScheduled = true
        eventLoop.execute(resumeWork!)
    }

    private func resumeBufferedFrames() {
        resumeScheduled = false
        notifyReceive()
    }

    // MARK: for subclasses

    /// Watches `fd` for this backend: read readiness calls the receive handler,
    /// write readiness (after `armWritable`) the writable handler.
    public final func watch(fd: Int32) throws(NetBackendError) {
        do {
            source = try eventLoop.watch(fd: fd, name: name) { [weak self] ready in
                guard let self else { return }
                if ready.contains(.write) {
                    self.source?.disable(.write)
                    self.notifyWritable()
                }
                if ready.contains(.read) { self.notifyReceive() }
            }
        } catch {
            throw .system(error)
        }
    }

    /// Asks for one writable callback; call when `send` returned `.wouldBlock`.
    public final func armWritable() { source?.enable(.write) }

    /// The descriptor `watch(fd:)` watches is dead for good (a vanished device): stop
    /// watching it, so that its endless error condition cannot make the loop spin.
    public final func stopWatching() {
        source?.cancel()
        source = nil
    }

    /// Signals readiness by hand, for backends whose frames do not come from `fd`: calls
    /// the receive handler if receive is enabled, and again later while
    /// `hasBufferedFrames` says frames wait. Loop thread.
    public final func notifyReceive() {
        if handlers.callReceive() && hasBufferedFrames { resumeIfBuffered() }
    }

    public final func notifyWritable() { handlers.callWritable() }
    /// Subclasses call this when `isLinkUp` changed.
    public final func notifyLinkState(_ up: Bool) { handlers.callLinkState(up) }
}
