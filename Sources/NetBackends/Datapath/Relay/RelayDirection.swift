import CNetBackends
#if canImport(Glibc)
import Glibc
#endif

/// One direction of a relay: frames read from `source` go to `sink` through an `Egress`
/// (header conversion, cutting, checksums, joining: see there). One frame buffer, read
/// into directly (no copy); nothing allocated per frame.
///
/// Back-pressure follows QEMU's can_receive model: when `sink` says would-block, the
/// frame stays in the buffer, `source` receive is disabled, and the sink's writable
/// callback resumes the direction. A slow side therefore costs no drops.
///
/// When the sink takes TSO and the source never gives GSO frames (a plain stream or dgram
/// peer toward a tap), frames are read ahead into a `JoinRing` and the egress sends runs
/// of one connection's segments as one GSO frame.
public final class RelayDirection: @unchecked Sendable {
    public let source: NetBackend
    public let sink: NetBackend
    public let statistics = BackendStatistics()
    /// Frames handled per readiness callback before yielding to the other direction.
    @exclusivity(unchecked) public var batchLimit = 128
    /// Segments cut from super-frames per wake-up: a longer cut (a small `gso_size` makes a
    /// 64 KiB frame over a thousand segments) yields to the loop and goes on next round.
    public var cutLimit: Int {
        get { egress.cutLimit }
        set { egress.cutLimit = newValue }
    }

    /// The sink's output: what makes each frame fit it.
    let egress: Egress
    private let buffer: UnsafeMutableRawPointer
    private let inVector: UnsafeMutablePointer<iovec>
    // Loop-thread state read per frame: no run-time exclusivity check (see BackendStatistics).
    @exclusivity(unchecked) private var pendingLength = -1   // a frame waiting for a blocked sink
    @exclusivity(unchecked) private var blocked = false
    /// Set by `Relay.stop` once no handler of the relay can run any more: final.
    @exclusivity(unchecked) private var stopped = false
    /// Set when joining: the sink takes TSO, the source never hands out GSO frames.
    private let ring: JoinRing?
    /// An eventfd that is always readable, watched only while a cut waits: enabling its
    /// read interest brings `resume` next loop round, without allocating per yield.
    private var resumeCut: EventSource?

    init(from source: NetBackend, to sink: NetBackend, capture: PcapWriter?) {
        self.source = source
        self.sink = sink
        egress = Egress(to: sink, statistics: statistics, capture: capture, mayPause: true)
        buffer = .allocate(byteCount: egress.bufferSize, alignment: 64)
        inVector = .allocate(capacity: 1)
        inVector.initialize(to: iovec(iov_base: buffer, iov_len: egress.bufferSize))
        ring = egress.makeJoinRing(for: source)
        let fd = eventfd(1, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        if fd >= 0 {
            resumeCut = try? sink.eventLoop.watch(fd: fd, name: "relay \(source.name)->\(sink.name) cut", ownsDescriptor: true) {
                [weak self] _ in
                guard let self else { return }
                self.resumeCut?.disable(.read)
                do throws(NetBackendError) { try self.resume() } catch { self.sink.eventLoop.stop(throwing: error) }
            }
            if resumeCut == nil { _ = Glibc.close(fd) }
        }
        // Without the eventfd a cut cannot yield: it goes on to the end.
        if resumeCut == nil { egress.mayPause = false }
    }

    deinit {
        resumeCut?.cancel()
        buffer.deallocate()
        inVector.deallocate()
    }

    /// Every drop of this direction by reason, zeros included, for reports: what it counted
    /// from send and receive results, what the sink lost after taking it, what the source
    /// lost before it could hand it out (`BackendStatistics.countLostAfterSend`/`BeforeReceive`).
    public var dropsByReason: [(DropReason, UInt64)] {
        DropReason.allCases.map {
            ($0, statistics.drops($0) &+ sink.statistics.lostAfterSend($0) &+ source.statistics.lostBeforeReceive($0))
        }
    }

    /// Makes the direction inert (see `Relay.stop`).
    func stop() { stopped = true }

    /// Source readable: move up to a batch of frames, then end the sink's batch. A
    /// failing `flush` (the peer vanished while gathered frames were written) throws
    /// like a failing `send`.
    func pump() throws(NetBackendError) {
        if blocked || stopped { return }
        egress.beginWakeup()
        if let ring { try pumpJoining(ring) } else { try pumpFrames() }
        try sink.flush()
    }

    private func pumpFrames() throws(NetBackendError) {
        var budget = batchLimit
        let inHeader = source.vnetHeaderLength
        while budget > 0 {
            switch try source.receive(into: UnsafeBufferPointer(start: inVector, count: 1)) {
            case .empty:
                return
            case .dropped(_, let reason):
                statistics.countDrop(reason)
            case .frame(let length):
                let outcome = try egress.send(buffer, length: length, headerLength: inHeader)
                if outcome != .done { hold(length, outcome); return }
            }
            budget -= 1
        }
    }

    /// The sink would block, or a cut paused: keep the frame, stop reading until `resume`.
    private func hold(_ length: Int, _ outcome: EgressOutcome) {
        pendingLength = length
        blocked = true
        source.disableReceive()
        if outcome == .paused { resumeCut?.enable(.read) }
    }

    /// Sink writable again (or a cut that yielded is due): retry the held frame, then
    /// resume reading.
    func resume() throws(NetBackendError) {
        guard blocked, !stopped else { return }
        blocked = false
        egress.beginWakeup()
        if let ring {
            let outcome = try egress.deliver(ring)
            if outcome != .done { hold(-1, outcome); return }
        } else if pendingLength >= 0 {
            let outcome = try egress.send(buffer, length: pendingLength, headerLength: source.vnetHeaderLength)
            if outcome != .done { hold(pendingLength, outcome); return }
            pendingLength = -1
        }
        if stopped { return }   // stopped from inside the send above
        source.enableReceive()
        try pump()
    }

    // MARK: joining

    /// `pump` when joining: reads up to a ring of frames, then delivers them, runs joined.
    private func pumpJoining(_ ring: JoinRing) throws(NetBackendError) {
        var budget = batchLimit
        while budget > 0 {
            ring.reset()
            var sourceEmpty = false
            reading: while !ring.isFull {
                switch try source.receive(into: UnsafeBufferPointer(start: ring.vectors + ring.count, count: 1)) {
                case .empty:
                    sourceEmpty = true
                    break reading
                case .dropped(_, let reason):
                    statistics.countDrop(reason)
                case .frame(let length):
                    ring.append(length: length)
                }
            }
            budget -= max(1, ring.count)
            let outcome = try egress.deliver(ring)
            if outcome != .done { hold(-1, outcome); return }
            if sourceEmpty { return }
        }
    }
}
