#if canImport(Glibc)
import Glibc
#endif

/// What became of a frame handed to `Egress`.
public enum EgressOutcome: Equatable, Sendable {
    /// Sent or dropped (counted): the caller's buffer is free again.
    case done
    /// The sink would block: the frame (or the rest of its cut) is still to go. Offer the
    /// same frame again once the sink is writable, or `abandon` it.
    case wouldBlock
    /// A long cut used up this wake-up's budget (`cutBudget`): offer the frame again on a
    /// later loop round to go on from where it stopped.
    case paused
}

/// One port's output: makes a frame fit its receiver and hands it over. What was once
/// private to a relay direction, so that a relay and a switch share it:
/// - the virtio-net header converted between lengths 0, 10 and 12;
/// - a GSO frame cut into segments for a sink that takes none (`TCPSegmenter`, counted
///   `sw_segmented`), a partial checksum finished for a sink that takes no NEEDS_CSUM;
/// - runs of TCP segments joined into one super-frame for a sink that takes TSO
///   (`deliver(_:)` over a `JoinRing` the caller reads into);
/// - every drop counted in `statistics` under its reason.
/// Nothing is allocated per frame. Loop thread only.
public final class Egress: @unchecked Sendable {
    public let sink: NetBackend
    /// Frames, bytes, GSO frames, software cuts and drops of this output.
    public let statistics: BackendStatistics
    /// Segments cut per wake-up before `.paused` (only when `mayPause`).
    @exclusivity(unchecked) public var cutLimit = 256
    /// Whether a long cut may stop with `.paused` (the caller can come back on a later
    /// round); when false a cut goes on until done or would-block.
    @exclusivity(unchecked) public var mayPause: Bool

    private let capture: PcapWriter?
    let bufferSize = maximumFrameLength + VirtioNetHeader.mergeableLength + 64
    private let outVector: UnsafeMutablePointer<iovec>
    private let header: UnsafeMutableRawPointer   // converted header, when lengths differ
    /// The segment built after the sink's header while cutting, not sent yet (0: none).
    private let segment: UnsafeMutableRawPointer
    @exclusivity(unchecked) private var segmenter: TCPSegmenter?
    @exclusivity(unchecked) private var segmentLength = 0
    @exclusivity(unchecked) private var cutBudget = 0
    // What the sink accepts, from its negotiation (`renegotiated()` reads it again).
    @exclusivity(unchecked) private(set) var sinkTakesCsum = false
    @exclusivity(unchecked) private(set) var sinkTakesTSO4 = false
    @exclusivity(unchecked) private(set) var sinkTakesTSO6 = false

    /// An output to `sink` as it is negotiated now (make a new one after renegotiating).
    public init(to sink: NetBackend, statistics: BackendStatistics = BackendStatistics(), capture: PcapWriter? = nil,
                mayPause: Bool = false) {
        self.sink = sink
        self.statistics = statistics
        self.capture = capture
        self.mayPause = mayPause
        outVector = .allocate(capacity: 1 + TCPCoalescer.maximumSegments)
        outVector.initialize(repeating: iovec(), count: 1 + TCPCoalescer.maximumSegments)
        header = .allocate(byteCount: 16, alignment: 16)
        segment = .allocate(byteCount: maximumFrameLength + VirtioNetHeader.mergeableLength + 64, alignment: 64)
        cutBudget = cutLimit
        readNegotiation()
    }

    /// The sink renegotiated: what it takes is read again, and a cut under way is given up
    /// (counted `queue_full`), as a new egress would have lost it. Loop thread.
    public func renegotiated() {
        if segmenter != nil { abandon(.queueFull) }
        readNegotiation()
    }

    private func readNegotiation() {
        let takes = sink.vnetHeaderLength > 0 ? sink.negotiatedFeatures : []
        sinkTakesCsum = takes.contains(.csum)
        sinkTakesTSO4 = takes.isSuperset(of: [.csum, .hostTSO4])
        sinkTakesTSO6 = takes.isSuperset(of: [.csum, .hostTSO6])
    }

    deinit {
        outVector.deallocate()
        header.deallocate()
        segment.deallocate()
    }

    /// True when the sink takes TCP super-frames, so a source that gives none gains from
    /// joining (`makeJoinRing`).
    public var joins: Bool { sinkTakesTSO4 || sinkTakesTSO6 }

    /// A ring to read a source's frames into for `deliver`, when joining pays: the sink
    /// takes TSO and the source gives no GSO frames of its own.
    func makeJoinRing(for source: NetBackend) -> JoinRing? {
        let sourceGivesGSO = source.vnetHeaderLength > 0 && !source.negotiatedFeatures.isDisjoint(with: [.guestTSO4, .guestTSO6])
        guard joins && !sourceGivesGSO else { return nil }
        let ring = JoinRing(capacity: TCPCoalescer.maximumSegments, slotSize: bufferSize)
        ring.headerLength = source.vnetHeaderLength
        return ring
    }

    /// Starts a wake-up: the cut budget is `cutLimit` again.
    @inline(__always)
    public func beginWakeup() { cutBudget = cutLimit }

    /// Whether a cut is under way (a frame was left with `.wouldBlock` or `.paused`).
    public var isCutting: Bool { segmenter != nil }

    /// Gives up the frame left with `.wouldBlock` or `.paused`: counted as `reason` (a
    /// switch port whose queue is full).
    public func abandon(_ reason: DropReason) {
        segmenter = nil
        segmentLength = 0
        statistics.countDrop(reason)
    }

    /// Hands `frame` (`length` bytes, with a `headerLength`-byte virtio-net header in
    /// front) to the sink. The frame's header may be changed in place (a checksum
    /// finished clears NEEDS_CSUM). See `EgressOutcome`.
    @inline(__always)
    public func send(_ frame: UnsafeMutableRawPointer, length: Int, headerLength inHeader: Int) throws(NetBackendError) -> EgressOutcome {
        let outHeader = sink.vnetHeaderLength
        guard length >= inHeader else {
            statistics.countDrop(.truncated)
            return .done
        }
        let payload = frame + inHeader
        let payloadLength = length - inHeader
        let gso = inHeader > 0 && VirtioNetHeader.rawIsGSO(frame)
        if gso {
            let type = frame.load(fromByteOffset: 1, as: UInt8.self) & ~VirtioNetHeader.gsoECN
            let takes = type == VirtioNetHeader.GSOType.tcpv4.rawValue ? sinkTakesTSO4
                : type == VirtioNetHeader.GSOType.tcpv6.rawValue ? sinkTakesTSO6 : outHeader > 0
            if !takes || segmenter != nil { return try sendSegments(frame, payload, payloadLength) }
        } else if inHeader > 0 && !sinkTakesCsum
                    && frame.load(as: UInt8.self) & VirtioNetHeader.Flags.needsCsum.rawValue != 0 {
            // Finished here; the header that goes on must not ask again.
            InternetChecksum.completeIfNeeded(header: frame, frame: payload, length: payloadLength)
            frame.storeBytes(of: frame.load(as: UInt8.self) & ~VirtioNetHeader.Flags.needsCsum.rawValue, as: UInt8.self)
        }
        var count = 1
        if inHeader == outHeader {
            outVector[0] = iovec(iov_base: frame, iov_len: length)
        } else if outHeader == 0 {
            outVector[0] = iovec(iov_base: payload, iov_len: payloadLength)
        } else {
            VirtioNetHeader.convert(from: inHeader > 0 ? UnsafeRawPointer(frame) : nil, fromLength: inHeader,
                                    to: header, toLength: outHeader)
            outVector[0] = iovec(iov_base: header, iov_len: outHeader)
            outVector[1] = iovec(iov_base: payload, iov_len: payloadLength)
            count = 2
        }
        let result = try offer(count)
        if result == .wouldBlock { return .wouldBlock }
        if case .sent = result {
            statistics.frames &+= 1
            statistics.bytes &+= UInt64(payloadLength)
            if gso { statistics.gsoFrames &+= 1 }
            capture?.record(UnsafeRawBufferPointer(start: payload, count: payloadLength))
        }
        return .done
    }

    /// Ends the sink's batch (a failing `flush` throws like a failing `send`).
    @inline(__always)
    public func flush() throws(NetBackendError) { try sink.flush() }

    /// Sends the first `count` entries of `outVector`; a drop is counted.
    @inline(__always)
    private func offer(_ count: Int) throws(NetBackendError) -> SendResult {
        let result = try sink.send(UnsafeBufferPointer(start: outVector, count: count), more: true)
        if case .dropped(let reason) = result { statistics.countDrop(reason) }
        return result
    }

    /// Cuts the GSO frame into segments for a sink that cannot take it (as the kernel
    /// would for a device without TSO) and sends them one by one; a sink that would block
    /// keeps the cutting where it is, and the next `send` of the frame goes on from there.
    private func sendSegments(_ frame: UnsafeMutableRawPointer, _ payload: UnsafeMutableRawPointer,
                              _ payloadLength: Int) throws(NetBackendError) -> EgressOutcome {
        let outHeader = sink.vnetHeaderLength
        if segmenter == nil {
            let gsoSize = Int(UInt16(littleEndian: frame.loadUnaligned(fromByteOffset: 4, as: UInt16.self)))
            let type = frame.load(fromByteOffset: 1, as: UInt8.self) & ~VirtioNetHeader.gsoECN
            guard type == VirtioNetHeader.GSOType.tcpv4.rawValue || type == VirtioNetHeader.GSOType.tcpv6.rawValue else {
                statistics.countDrop(.offloadUnsupported)   // UDP GSO: never asked for, not cut here
                return .done
            }
            // Not TCP of the family the header names, or a gso_size no sender uses: malformed.
            guard let s = TCPSegmenter(frame: payload, length: payloadLength, gsoSize: gsoSize),
                  s.isIPv6 == (type == VirtioNetHeader.GSOType.tcpv6.rawValue),
                  outHeader + s.maximumSegmentLength <= bufferSize else {
                statistics.countDrop(.malformed)
                return .done
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
            if try offer(1) == .wouldBlock { return .wouldBlock }
            segmentLength = 0
            cutBudget -= 1
            if mayPause && cutBudget <= 0 && !segmenter!.isFinished {
                // Enough for this wake-up: the caller lets the loop run everything else.
                return .paused
            }
        }
        segmenter = nil
        statistics.frames &+= 1
        statistics.bytes &+= UInt64(payloadLength)
        statistics.gsoFrames &+= 1
        statistics.softwareSegmented &+= 1
        capture?.record(UnsafeRawBufferPointer(start: payload, count: payloadLength))
        return .done
    }

    // MARK: joining

    /// Delivers `ring`'s frames from `next` on, runs of one connection's segments joined;
    /// stops at `.wouldBlock` or `.paused` (the ring keeps the rest; call again).
    func deliver(_ ring: JoinRing) throws(NetBackendError) -> EgressOutcome {
        let outHeader = sink.vnetHeaderLength
        while !ring.isDrained {
            if let run = TCPCoalescer.run(in: ring, maximumLength: maximumFrameLength, ipv4: sinkTakesTSO4, ipv6: sinkTakesTSO6) {
                let count = TCPCoalescer.describe(run, in: ring, headerLength: outHeader, scratch: segment, into: outVector)
                let result = try offer(count)
                if result == .wouldBlock { return .wouldBlock }
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
                let outcome = try send(ring.slot(ring.next), length: ring.length(ring.next), headerLength: ring.headerLength)
                if outcome != .done { return outcome }
                ring.next += 1
            }
        }
        return .done
    }
}
