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
public final class RelayDirection: @unchecked Sendable {
    public let source: NetBackend
    public let sink: NetBackend
    public let statistics = BackendStatistics()
    /// Frames handled per readiness callback before yielding to the other direction.
    @exclusivity(unchecked) public var batchLimit = 128

    private let capture: PcapWriter?
    private let bufferSize = maximumFrameLength + VirtioNetHeader.mergeableLength + 64
    private let buffer: UnsafeMutableRawPointer
    private let inVector: UnsafeMutablePointer<iovec>
    private let outVector: UnsafeMutablePointer<iovec>
    private let header: UnsafeMutableRawPointer   // converted header, when lengths differ
    // Loop-thread state read per frame: no run-time exclusivity check (see BackendStatistics).
    @exclusivity(unchecked) private var pendingLength = -1   // a frame waiting for a blocked sink
    @exclusivity(unchecked) private var blocked = false

    init(from source: NetBackend, to sink: NetBackend, capture: PcapWriter?) {
        self.source = source
        self.sink = sink
        self.capture = capture
        buffer = .allocate(byteCount: bufferSize, alignment: 64)
        inVector = .allocate(capacity: 1)
        inVector.initialize(to: iovec(iov_base: buffer, iov_len: bufferSize))
        outVector = .allocate(capacity: 2)
        outVector.initialize(repeating: iovec(), count: 2)
        header = .allocate(byteCount: 16, alignment: 16)
    }

    deinit {
        buffer.deallocate()
        inVector.deallocate()
        outVector.deallocate()
        header.deallocate()
    }

    /// Source readable: move up to a batch of frames.
    func pump() throws(NetBackendError) {
        if blocked { return }
        var budget = batchLimit
        defer { try? sink.flush() }
        while budget > 0 {
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

    /// Sink writable again: retry the held frame, then resume reading.
    func resume() throws(NetBackendError) {
        guard blocked else { return }
        blocked = false
        if try !forward() { return }
        source.enableReceive()
        try pump()
    }

    /// Sends the frame in `buffer`; false when the sink would block (the frame is kept).
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
        let payload = buffer + inHeader
        let payloadLength = length - inHeader
        let gso = inHeader > 0 && VirtioNetHeader.rawIsGSO(buffer)
        var count = 1
        if inHeader == outHeader {
            outVector[0] = iovec(iov_base: buffer, iov_len: length)
        } else {
            if gso && outHeader == 0 {
                // Negotiation keeps this from happening; never hand a GSO frame to a side without a header.
                statistics.countDrop(.offloadUnsupported)
                pendingLength = -1
                return true
            }
            if outHeader == 0 {
                if inHeader > 0 { InternetChecksum.completeIfNeeded(header: buffer, frame: payload, length: payloadLength) }
                outVector[0] = iovec(iov_base: payload, iov_len: payloadLength)
            } else {
                VirtioNetHeader.convert(from: inHeader > 0 ? UnsafeRawPointer(buffer) : nil, fromLength: inHeader,
                                        to: header, toLength: outHeader)
                outVector[0] = iovec(iov_base: header, iov_len: outHeader)
                outVector[1] = iovec(iov_base: payload, iov_len: payloadLength)
                count = 2
            }
        }
        switch try sink.send(UnsafeBufferPointer(start: outVector, count: count), more: true) {
        case .wouldBlock:
            blocked = true
            source.disableReceive()
            return false
        case .dropped(let reason):
            statistics.countDrop(reason)
        case .sent:
            statistics.frames &+= 1
            statistics.bytes &+= UInt64(payloadLength)
            if gso { statistics.gsoFrames &+= 1 }
            capture?.record(UnsafeRawBufferPointer(start: payload, count: payloadLength))
        }
        pendingLength = -1
        return true
    }
}
