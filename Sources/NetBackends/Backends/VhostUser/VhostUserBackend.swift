import CNetBackends
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// A vhost-user-net device (QEMU's docs/interop/vhost-user.rst): a VMM hands its guest's
/// virtio-net queue pair (RX 0, TX 1) to netbe over a unix socket, and frames move straight
/// between the guest's buffers and the other backend. `receive` takes the guest's TX
/// chains, `send` fills the guest's RX buffers (MRG_RXBUF: one frame across several).
/// Interrupts go out once per loop round (a before-wait hook), only when the guest asked
/// for them (EVENT_IDX or NO_INTERRUPT); the guest's kicks are suppressed while netbe is
/// busy (NO_NOTIFY, or avail_event left behind with EVENT_IDX).
///
/// The guest is untrusted: see `SplitVirtqueue` and `GuestMemory`. A bad chain is skipped
/// (used with length 0) and counted `malformed`; a broken protocol message logs an error
/// and ends the connection; the next frontend is served.
public final class VhostUserBackend: NetBackend, @unchecked Sendable {
    public static let kind = BackendKind(
        name: "vhost-user", prefixes: ["vhost-user"],
        summary: "vhost-user-net device for QEMU, cloud-hypervisor or DPDK virtio-user guests (socket=PATH)",
        check: { (spec) throws(NetBackendError) in _ = try VhostUserConfiguration(spec) },
        open: { (spec, loop) throws(NetBackendError) in try VhostUserBackend(spec: spec, eventLoop: loop) }
    )

    let config: VhostUserConfiguration
    let memory = GuestMemory()
    let rx = SplitVirtqueue(index: 0)
    let tx = SplitVirtqueue(index: 1)
    var channel: VhostUserChannel?
    var channelSource: EventSource?
    var listenFD: Int32 = -1
    var listenSource: EventSource?
    var boundPath: String?
    var reconnectTimer: OneShotTimer?
    var rxKickSource: EventSource?
    var txKickSource: EventSource?

    // Negotiated with the frontend.
    var ackedFeatures: UInt64 = 0
    var ackedProtocol: UInt64 = 0
    /// The guest's virtio-net header: 12 with VERSION_1 or MRG_RXBUF, else 10.
    var guestHeaderLength = 12
    var mergeable = false
    /// Offloads the guest accepted, as this backend's own bits (see `offered`).
    var guestTakes: VirtioNetFeatures = []

    /// The relay wants frames (`watchReceive`); kept for kick sources made later.
    private var receiveWanted = false
    /// A `send` found no room and returned would-block: the next RX kick calls the writable handler.
    private var waitingForBuffers = false
    private var linkWasUp = false
    /// Loop rounds since TX last had frames (polled while below `idlePollRounds`).
    private var txIdleRounds = Int.max
    @exclusivity(unchecked) private var loggedBroken = false

    // Scratch for headers and the chains of one frame, allocated once.
    private let guestHeader = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 8)
    private let callerHeader = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 8)
    private static let maximumChainsPerFrame = 256
    private let chainHeads = UnsafeMutablePointer<UInt16>.allocate(capacity: maximumChainsPerFrame)
    private let chainLengths = UnsafeMutablePointer<Int>.allocate(capacity: maximumChainsPerFrame)

    public init(spec: BackendSpec, eventLoop: NetEventLoop) throws(NetBackendError) {
        config = try VhostUserConfiguration(spec)
        super.init(spec: spec, kind: "vhost-user", name: config.socketPath, eventLoop: eventLoop)
        eventLoop.addBeforeWaitHook { [weak self] timeout in self?.beforeWait(&timeout) }
        do {
            reconnectTimer = try eventLoop.makeOneShotTimer(name: "vhost-user reconnect \(name)") { [weak self] in self?.connectToFrontend() }
        } catch {
            throw .system(error)
        }
        if config.server {
            try listen()
        } else if !connectToFrontend(first: true) {
            guard config.reconnectSeconds != nil else {
                throw .deviceGone("\(name): no vhost-user frontend listens there (give reconnect=SECONDS to wait for one)")
            }
        }
    }

    deinit {
        guestHeader.deallocate()
        callerHeader.deallocate()
        chainHeads.deallocate()
        chainLengths.deallocate()
    }

    // MARK: what the relay sees

    /// Checksum and TSO both ways: passed through to the guest as the features it is offered.
    public override var capabilities: VirtioNetFeatures { [.csum, .guestCsum, .hostTSO4, .hostTSO6, .guestTSO4, .guestTSO6] }
    public override var supportedHeaderLengths: [Int] { [0, 10, 12] }
    public override var preferredHeaderLength: Int { 12 }

    public override func configure(features: VirtioNetFeatures, vnetHeaderLength: Int) throws(NetBackendError) -> Int {
        vnetHeaderLength
    }

    /// Up when the guest can take frames (its RX queue runs).
    public override var isLinkUp: Bool { rx.isReady }

    public override var hasBufferedFrames: Bool { tx.pending() > 0 }

    public override func watchReceive(_ on: Bool) {
        receiveWanted = on
        if on { txKickSource?.enable(.read) } else { txKickSource?.disable(.read) }
    }

    /// The virtio-net features offered to the guest: what the relay granted this side,
    /// seen from the guest (what netbe may be sent is what the guest may receive).
    var offeredFeatures: UInt64 {
        let granted = vnetHeaderLength > 0 ? negotiatedFeatures : []
        let offloads = granted.mirrored.intersection(capabilities)
        return offloads.withPrerequisites.rawValue | VirtioNetFeatures.mrgRxbuf.rawValue
            | VirtioRingFeature.version1 | VirtioRingFeature.eventIndex | VirtioRingFeature.indirectDescriptors
            | VirtioRingFeature.inOrder | VirtioRingFeature.protocolFeatures
    }

    // MARK: guest TX -> receive

    public override func receive(into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> ReceiveResult {
        var waiting = tx.pending()
        if waiting == 0 {
            reportBroken(tx)
            if !tx.isReady || !tx.armNotify() { return .empty }
            waiting = tx.pending()
            if waiting == 0 { return .empty }
        }
        tx.quiet()
        txIdleRounds = 0
        let head = tx.head(at: 0)
        let limit = guestHeaderLength + maximumFrameLength
        guard tx.walk(head: head, writable: false, limit: limit, memory: memory),
              tx.chainBytes >= guestHeaderLength + 14 else {
            tx.addUsed(id: head, length: 0)
            tx.publish(taken: 1)
            return .dropped(length: 0, reason: .malformed)
        }
        var source = IOVectorCursor(tx.segments, tx.segmentCount)
        _ = source.take(guestHeader, guestHeaderLength)
        let frameLength = tx.chainBytes - guestHeaderLength
        let outHeader = vnetHeaderLength
        let result: ReceiveResult
        if outHeader == 0 && (VirtioNetHeader.rawIsGSO(guestHeader) || guestHeader.load(as: UInt8.self) & 1 != 0) {
            result = .dropped(length: frameLength, reason: .offloadUnsupported)   // not offered: the guest broke the rules
        } else if IOVectors.length(of: buffers) < outHeader + frameLength {
            statistics.countDrop(.noSpace)
            result = .dropped(length: outHeader + frameLength, reason: .noSpace)
        } else {
            var out = IOVectorCursor(buffers.baseAddress!, buffers.count)
            if outHeader > 0 {
                VirtioNetHeader.convert(from: guestHeader, fromLength: guestHeaderLength, to: callerHeader, toLength: outHeader)
                _ = out.put(callerHeader, outHeader)
            }
            _ = out.copy(frameLength, from: &source)
            // Read from a file the frontend truncated: zeros, not its frame.
            result = memory.faulted ? .dropped(length: frameLength, reason: .malformed) : .frame(length: outHeader + frameLength)
        }
        tx.addUsed(id: head, length: 0)
        tx.publish(taken: 1)
        return result
    }

    public override func peekReceiveLength() throws(NetBackendError) -> Int {
        guard tx.pending() > 0 else { return 0 }
        guard tx.walk(head: tx.head(at: 0), writable: false, limit: guestHeaderLength + maximumFrameLength, memory: memory),
              tx.chainBytes >= guestHeaderLength else { return 0 }
        return tx.chainBytes - guestHeaderLength + vnetHeaderLength
    }

    // MARK: send -> guest RX

    public override func send(_ frame: UnsafeBufferPointer<iovec>, more: Bool) throws(NetBackendError) -> SendResult {
        guard rx.isReady else {
            // No guest queue to fill (yet): held back as QEMU's can_receive does, resumed when it runs.
            reportBroken(rx)
            waitingForBuffers = true
            return .wouldBlock
        }
        let total = IOVectors.length(of: frame)
        let inHeader = vnetHeaderLength
        guard total >= inHeader + 14 else { return .dropped(.truncated) }
        var source = IOVectorCursor(frame.baseAddress!, frame.count)
        if inHeader > 0 {
            _ = source.take(callerHeader, inHeader)
            let gso = VirtioNetHeader.rawIsGSO(callerHeader)
            let type = callerHeader.load(fromByteOffset: 1, as: UInt8.self) & ~VirtioNetHeader.gsoECN
            if gso && !(type == 1 ? guestTakes.contains(.hostTSO4) : type == 4 ? guestTakes.contains(.hostTSO6) : false) {
                return .dropped(.offloadUnsupported)
            }
            if callerHeader.load(as: UInt8.self) & 1 != 0 && !guestTakes.contains(.csum) { return .dropped(.offloadUnsupported) }
        }
        VirtioNetHeader.convert(from: inHeader > 0 ? UnsafeRawPointer(callerHeader) : nil, fromLength: inHeader,
                                to: guestHeader, toLength: guestHeaderLength)
        let payload = total - inHeader
        let need = guestHeaderLength + payload
        var available = rx.pending()
        var chains = 0, taken = 0, written = 0, buffers = 0
        var numBuffers: (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) = (nil, nil)
        while written < need {
            if taken == available {
                available = rx.pending()
                if taken == available {
                    reportBroken(rx)
                    if !rx.armNotify() || rx.pending() == taken {
                        waitingForBuffers = true
                        return .wouldBlock   // nothing published: the buffers written stay the guest's
                    }
                    available = rx.pending()
                }
            }
            guard chains < Self.maximumChainsPerFrame else { return .dropped(.oversized) }
            let head = rx.head(at: taken)
            taken += 1
            chainHeads[chains] = head
            chainLengths[chains] = 0
            chains += 1
            guard rx.walk(head: head, writable: true, limit: Int(Int32.max), memory: memory),
                  written > 0 || rx.chainBytes >= guestHeaderLength else {
                statistics.countDrop(.malformed)   // the chain, not the frame: it goes on in the next one
                continue
            }
            if !mergeable && rx.chainBytes < need {
                // Without MRG_RXBUF one buffer holds a frame: this one never will.
                return .dropped(.oversized)
            }
            var out = IOVectorCursor(rx.segments, rx.segmentCount)
            var n = 0
            if written == 0 {
                n = out.put(guestHeader, guestHeaderLength)
                if guestHeaderLength == 12 { numBuffers = (out.address(at: 10), out.address(at: 11)) }
            }
            n += out.copy(min(need - written, rx.chainBytes) - n, from: &source)
            chainLengths[chains - 1] = n
            written += n
            buffers += 1
        }
        if let lo = numBuffers.0, let hi = numBuffers.1 {
            lo.storeBytes(of: UInt8(buffers & 0xff), as: UInt8.self)
            hi.storeBytes(of: UInt8(buffers >> 8), as: UInt8.self)
        }
        for i in 0..<chains { rx.addUsed(id: chainHeads[i], length: chainLengths[i]) }
        rx.publish(taken: taken)
        rx.quiet()
        return .sent(total)
    }

    // MARK: notifications

    /// Before the loop waits: one interrupt per queue for all that was used this round.
    /// While TX was busy moments ago, look at the ring again every millisecond for a
    /// while: a polling frontend (DPDK virtio-user, no EVENT_IDX) was seen to add entries
    /// without the kick that NO_NOTIFY's clearing asks for, and a frame must not wait for
    /// the next one's kick.
    private func beforeWait(_ timeout: inout Int32) {
        if memory.faulted {
            disconnect("the frontend truncated its guest memory file under netbe (SIGBUS caught, the region read as zeros)", error: true)
            return
        }
        rx.signalIfNeeded()
        tx.signalIfNeeded()
        guard txIdleRounds < Self.idlePollRounds else { return }
        txIdleRounds += 1
        if receiveWanted && tx.pending() > 0 {
            notifyReceive()
            rx.signalIfNeeded()
            tx.signalIfNeeded()
        }
        if timeout < 0 || timeout > 1 { timeout = 1 }
    }

    /// About 50 ms of idle polling after TX traffic.
    private static let idlePollRounds = 50

    /// The guest added RX buffers (it kicks only while netbe waits for them).
    func rxKicked() {
        drain(rx.kickFD)
        if waitingForBuffers {
            waitingForBuffers = false
            rx.quiet()
            notifyWritable()
        }
    }

    func txKicked() {
        drain(tx.kickFD)
        notifyReceive()
    }

    private func drain(_ fd: Int32) {
        var v: UInt64 = 0
        _ = Glibc.read(fd, &v, 8)
    }

    private func reportBroken(_ q: SplitVirtqueue) {
        guard q.broken, !loggedBroken else { return }
        loggedBroken = true
        statistics.countDrop(.malformed)
        logger.error("\(name): the guest moved queue \(q.index)'s available index more than the ring size ahead; the queue is stopped until it is set up again")
    }

    /// Tells the relay when the guest's RX queue starts or stops.
    func updateLink() {
        let up = rx.isReady
        guard up != linkWasUp else { return }
        linkWasUp = up
        notifyLinkState(up)
        if up && waitingForBuffers {
            waitingForBuffers = false
            notifyWritable()
        }
    }

    /// A kick descriptor changed or a queue started: watch the new one.
    func rewatchKicks() {
        rxKickSource?.cancel(); rxKickSource = nil
        txKickSource?.cancel(); txKickSource = nil
        loggedBroken = false
        do {
            if rx.kickFD >= 0 {
                rxKickSource = try eventLoop.watch(fd: rx.kickFD, name: "\(name) rx kick") { [weak self] _ in self?.rxKicked() }
                rxKickSource?.enable(.read)
            }
            if tx.kickFD >= 0 {
                txKickSource = try eventLoop.watch(fd: tx.kickFD, name: "\(name) tx kick") { [weak self] _ in self?.txKicked() }
                if receiveWanted { txKickSource?.enable(.read) }
            }
        } catch {
            logger.error("\(name): \(error)")
        }
        // Frames the guest queued before the kick was watched raise no event of their own.
        if tx.isReady && tx.pending() > 0 { notifyReceive() }
        if waitingForBuffers && rx.isReady && rx.pending() > 0 { waitingForBuffers = false; notifyWritable() }
    }

    public override func close() {
        super.close()
        channelSource?.cancel(); channelSource = nil
        channel = nil
        resetDevice()
        memory.unmapAll()
        reconnectTimer?.cancel()
        listenSource?.cancel(); listenSource = nil
        if listenFD >= 0 { _ = Glibc.close(listenFD); listenFD = -1 }
        if let p = boundPath { unlink(p); boundPath = nil }
    }
}
