import CNetBackends
#if canImport(Glibc)
import Glibc
#endif

/// One direction of a relay: frames read from `source` are written to `sink`, with the
/// virtio-net header converted when the two sides' lengths differ. One frame buffer,
/// read into directly (no copy); nothing allocated per frame.
///
/// Back-pressure follows QEMU's can_receive model: when `sink` says would-block, the
/// frame stays in the buffer, `source` receive is disabled, and the sink's writable
/// callback resumes the direction. A slow side therefore costs no drops.
///
/// Offloads the sink cannot take are done here: a GSO frame is cut into segments
/// (`TCPSegmenter`), a partial checksum finished. When the sink takes TSO and the source
/// never gives GSO frames (a plain stream or dgram peer toward a tap), frames are read
/// ahead into a `JoinRing` and runs of one connection's segments leave as one GSO frame.
public final class RelayDirection: @unchecked Sendable {
    public let source: NetBackend
    public let sink: NetBackend
    public let statistics = BackendStatistics()
    /// Frames handled per readiness callback before yielding to the other direction.
    @exclusivity(unchecked) public var batchLimit = 128
    /// Segments cut from super-frames per wake-up: a longer cut (a small `gso_size` makes a
    /// 64 KiB frame over a thousand segments) yields to the loop and goes on next round.
    @exclusivity(unchecked) public var cutLimit = 256

    private let capture: PcapWriter?
    private let bufferSize = maximumFrameLength + VirtioNetHeader.mergeableLength + 64
    private let buffer: UnsafeMutableRawPointer
    private let inVector: UnsafeMutablePointer<iovec>
    private let outVector: UnsafeMutablePointer<iovec>
    private let header: UnsafeMutableRawPointer   // converted header, when lengths differ
    // Loop-thread state read per frame: no run-time exclusivity check (see BackendStatistics).
    @exclusivity(unchecked) private var pendingLength = -1   // a frame waiting for a blocked sink
    @exclusivity(unchecked) private var blocked = false
    /// Set by `Relay.stop` once no handler of the relay can run any more: final.
    @exclusivity(unchecked) private var stopped = false
    // What the sink accepts, from the negotiation done before the direction exists.
    private let sinkTakesCsum: Bool
    private let sinkTakesTSO4: Bool
    private let sinkTakesTSO6: Bool
    /// A GSO frame in `buffer` being cut for a sink that takes none, and the segment built
    /// in `segment` (after the sink's header) that is not sent yet (0: none).
    @exclusivity(unchecked) private var segmenter: TCPSegmenter?
    @exclusivity(unchecked) private var segmentLength = 0
    private let segment: UnsafeMutableRawPointer
    /// The frame `forward` works on: `buffer`, or a `JoinRing` slot.
    @exclusivity(unchecked) private var frame: UnsafeMutableRawPointer
    /// Set when joining: the sink takes TSO, the source never hands out GSO frames.
    private let ring: JoinRing?
    /// Segments this wake-up may still cut (`cutLimit` at each `pump`/`resume`).
    @exclusivity(unchecked) private var cutBudget = 0
    /// An eventfd that is always readable, watched only while a cut waits: enabling its
    /// read interest brings `resume` next loop round, without allocating per yield.
    private var resumeCut: EventSource?

    init(from source: NetBackend, to sink: NetBackend, capture: PcapWriter?) {
        self.source = source
        self.sink = sink
        self.capture = capture
        buffer = .allocate(byteCount: bufferSize, alignment: 64)
        inVector = .allocate(capacity: 1)
        inVector.initialize(to: iovec(iov_base: buffer, iov_len: bufferSize))
        outVector = .allocate(capacity: 1 + TCPCoalescer.maximumSegments)
        outVector.initialize(repeating: iovec(), count: 1 + TCPCoalescer.maximumSegments)
        header = .allocate(byteCount: 16, alignment: 16)
        segment = .allocate(byteCount: bufferSize, alignment: 64)
        let takes = sink.vnetHeaderLength > 0 ? sink.negotiatedFeatures : []
        sinkTakesCsum = takes.contains(.csum)
        sinkTakesTSO4 = takes.isSuperset(of: [.csum, .hostTSO4])
        sinkTakesTSO6 = takes.isSuperset(of: [.csum, .hostTSO6])
        frame = buffer
        let sourceGivesGSO = source.vnetHeaderLength > 0 && !source.negotiatedFeatures.isDisjoint(with: [.guestTSO4, .guestTSO6])
        ring = (sinkTakesTSO4 || sinkTakesTSO6) && !sourceGivesGSO
            ? JoinRing(capacity: TCPCoalescer.maximumSegments, slotSize: bufferSize) : nil
        ring?.headerLength = source.vnetHeaderLength
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
    }

    deinit {
        resumeCut?.cancel()
        buffer.deallocate()
        inVector.deallocate()
        outVector.deallocate()
        header.deallocate()
        segment.deallocate()
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
        if let ring { try pumpJoining(ring) } else { try pumpFrames() }
        try sink.flush()
    }

    private func pumpFrames() throws(NetBackendError) {
        var budget = batchLimit
        cutBudget = cutLimit
        while budget > 0 && cutBudget > 0 {
            switch try source.receive(into: UnsafeBufferPointer(start: inVector, count: 1)) {
            case .empty:
                return
            case .dropped(_, let reason):
                statistics.countDrop(reason)
            case .frame(let length):
                pendingLength = length
                if try !forward() { return }
            }
            budget -= 1
        }
    }

    /// Sink writable again (or a cut that yielded is due): retry the held frame, then
    /// resume reading.
    func resume() throws(NetBackendError) {
        guard blocked, !stopped else { return }
        blocked = false
        cutBudget = cutLimit
        if let ring {
            if try !deliver(ring) { return }
        } else if try !forward() {
            return
        }
        if stopped { return }   // stopped from inside the send above
        source.enableReceive()
        try pump()
    }

    /// Sends the frame at `frame` (`pendingLength` bytes); false when the sink would block (the frame is kept).
    @inline(__always)
    private func forward() throws(NetBackendError) -> Bool {
        let length = pendingLength
        let inHeader = source.vnetHeaderLength
        let outHeader = sink.vnetHeaderLength
        guard length >= inHeader else {
            statistics.countDrop(.truncated)
            pendingLength = -1
            return true
        }
        let payload = frame + inHeader
        let payloadLength = length - inHeader
        let gso = inHeader > 0 && VirtioNetHeader.rawIsGSO(frame)
        if gso {
            let type = frame.load(fromByteOffset: 1, as: UInt8.self) & ~VirtioNetHeader.gsoECN
            let takes = type == VirtioNetHeader.GSOType.tcpv4.rawValue ? sinkTakesTSO4
                : type == VirtioNetHeader.GSOType.tcpv6.rawValue ? sinkTakesTSO6 : outHeader > 0
            if !takes || segmenter != nil { return try forwardSegments(payload, payloadLength) }
        } else if inHeader > 0 && !sinkTakesCsum
                    && frame.load(as: UInt8.self) & VirtioNetHeader.Flags.needsCsum.rawValue != 0 {
            // Finished here; the header that goes on must not ask again.
            InternetChecksum.completeIfNeeded(header: frame, frame: payload, length: payloadLength)
            frame.storeBytes(of: frame.load(as: UInt8.self) & ~VirtioNetHeader.Flags.needsCsum.rawValue, as: UInt8.self)
        }
        var count = 1
        if inHeader == outHeader {
            outVector[0] = iovec(iov_base: frame, iov_len: length)
        } else {
            if outHeader == 0 {
                outVector[0] = iovec(iov_base: payload, iov_len: payloadLength)
            } else {
                VirtioNetHeader.convert(from: inHeader > 0 ? UnsafeRawPointer(frame) : nil, fromLength: inHeader,
                                        to: header, toLength: outHeader)
                outVector[0] = iovec(iov_base: header, iov_len: outHeader)
                outVector[1] = iovec(iov_base: payload, iov_len: payloadLength)
                count = 2
            }
        }
        let result = try offer(count)
        if result == .wouldBlock { return false }
        if case .sent = result {
            statistics.frames &+= 1
            statistics.bytes &+= UInt64(payloadLength)
            if gso { statistics.gsoFrames &+= 1 }
            capture?.record(UnsafeRawBufferPointer(start: payload, count: payloadLength))
        }
        pendingLength = -1
        return true
    }

    /// Sends the first `count` entries of `outVector`. A drop is counted; would-block makes
    /// this direction hold its frame and stop reading until the sink is writable.
    @inline(__always)
    private func offer(_ count: Int) throws(NetBackendError) -> SendResult {
        let result = try sink.send(UnsafeBufferPointer(start: outVector, count: count), more: true)
        switch result {
        case .wouldBlock:
            blocked = true
            source.disableReceive()
        case .dropped(let reason):
            statistics.countDrop(reason)
        case .sent:
            break
        }
        return result
    }

    /// Cuts the GSO frame in `buffer` into segments for a sink that cannot take it (as the
    /// kernel would for a device without TSO) and sends them one by one; a sink that
    /// would block keeps the cutting where it is, and `resume` goes on from there.
    private func forwardSegments(_ payload: UnsafeMutableRawPointer, _ payloadLength: Int) throws(NetBackendError) -> Bool {
        let outHeader = sink.vnetHeaderLength
        if segmenter == nil {
            let gsoSize = Int(UInt16(littleEndian: frame.loadUnaligned(fromByteOffset: 4, as: UInt16.self)))
            let type = frame.load(fromByteOffset: 1, as: UInt8.self) & ~VirtioNetHeader.gsoECN
            guard type == VirtioNetHeader.GSOType.tcpv4.rawValue || type == VirtioNetHeader.GSOType.tcpv6.rawValue else {
                statistics.countDrop(.offloadUnsupported)   // UDP GSO: never asked for, not cut here
                pendingLength = -1
                return true
            }
            // Not TCP of the family the header names, or a gso_size no sender uses: malformed.
            guard let s = TCPSegmenter(frame: payload, length: payloadLength, gsoSize: gsoSize),
                  s.isIPv6 == (type == VirtioNetHeader.GSOType.tcpv6.rawValue),
                  outHeader + s.maximumSegmentLength <= bufferSize else {
                statistics.countDrop(.malformed)
                pendingLength = -1
                return true
            }
            segmenter = s
            segmentLength = 0
            // Every segment goes with a header that asks for nothing (checksums are complete).
            VirtioNetHeader.convert(from: nil, fromLength: 0, to: segment, toLength: outHeader)
        }
        while true {
            if segmentLength == 0 {
                guard let n = segmenter!.next(into: segment + outHeader) else { break }
                segmentLength = n
            }
            outVector[0] = iovec(iov_base: segment, iov_len: outHeader + segmentLength)
            if try offer(1) == .wouldBlock { return false }
            segmentLength = 0
            cutBudget -= 1
            if cutBudget <= 0 && !segmenter!.isFinished, let resumeCut {
                // Enough for this wake-up: hold the cut as back-pressure holds it, and let
                // the loop run everything else before `resume` goes on from here.
                blocked = true
                source.disableReceive()
                resumeCut.enable(.read)
                return false
            }
        }
        segmenter = nil
        statistics.frames &+= 1
        statistics.bytes &+= UInt64(payloadLength)
        statistics.gsoFrames &+= 1
        statistics.softwareSegmented &+= 1
        capture?.record(UnsafeRawBufferPointer(start: payload, count: payloadLength))
        pendingLength = -1
        return true
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
            if try !deliver(ring) { return }
            if sourceEmpty { return }
        }
    }

    /// Delivers the ring's frames from `next` on; false when the sink would block (the
    /// ring keeps them, and `resume` calls this again).
    private func deliver(_ ring: JoinRing) throws(NetBackendError) -> Bool {
        let outHeader = sink.vnetHeaderLength
        while !ring.isDrained {
            if let run = TCPCoalescer.run(in: ring, maximumLength: maximumFrameLength, ipv4: sinkTakesTSO4, ipv6: sinkTakesTSO6) {
                let count = TCPCoalescer.describe(run, in: ring, headerLength: outHeader, scratch: segment, into: outVector)
                let result = try offer(count)
                if result == .wouldBlock { return false }
                if case .sent = result {
                    statistics.frames &+= UInt64(run.count)
                    statistics.bytes &+= UInt64(run.frameLength)
                    statistics.gsoFrames &+= 1
                    if let capture {
                        for i in 0..<run.count {
                            let f = ring.frame(at: i)
                            capture.record(UnsafeRawBufferPointer(start: f.bytes, count: f.length))
                        }
                    }
                } else if case .dropped(let reason) = result {
                    // `offer` counted one; the run was `run.count` frames read, each lost.
                    for _ in 1..<run.count { statistics.countDrop(reason) }
                }
                ring.next += run.count
            } else {
                frame = ring.slot(ring.next)
                pendingLength = ring.length(ring.next)
                let sent = try forward()
                frame = buffer
                if !sent { return false }
                ring.next += 1
            }
        }
        return true
    }
}
