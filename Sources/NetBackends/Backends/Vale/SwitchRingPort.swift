#if canImport(Glibc)
import Glibc
#endif

/// The switch's side of a port in another process: the kernel side of the port's two
/// netmap-format rings in a sealed memfd this side made and formatted. Frames the client
/// published on its TX ring are `receive`d; frames `send` here go onto its RX ring and
/// leave at `flush` (one publish, one kick). Every index and slot the client writes is
/// checked by the ring module before use (`faults` counts the bad ones): a client that
/// scribbles on its memory loses its own frames, nothing else. Frames carry a 12-byte
/// virtio-net header; what the client takes (`clientFeatures`) is what it reported.
public final class SwitchRingPort: NetBackend, @unchecked Sendable {
    public static let slots = 1024
    public static let bufferSize = 2048
    /// Slots handed back to the peer at least this often while frames keep coming.
    static let releaseEvery = 128
    /// ... but the client is kicked for them only once this many went back unkicked (half
    /// the ring), or when its ring was found empty: a sender waiting for room then wakes to
    /// a half-empty ring, not to every 128 slots (each wake-up is a context switch).
    static let kickEvery = 512
    /// Frames handed back to the client since its last kick.
    @exclusivity(unchecked) private var releasedUnkicked = 0

    let memory: SharedRingMemory
    /// The client's TX ring, drained from the kernel side.
    private let fromClient: NetmapRingReceiver
    /// The client's RX ring, filled from the kernel side.
    private let toClient: NetmapRingSender
    /// Written by the client after it published; watched.
    let kick: RingKick
    /// Written here after publishing.
    let wake: RingKick
    /// What the client's frontend accepted (its `features` message); loop thread.
    @exclusivity(unchecked) public var clientFeatures: VirtioNetFeatures = []

    /// Makes the memfd (sealed before anyone sees it), lays out one TX and one RX ring,
    /// and the two eventfds. `name` is `SWITCH:PORT`.
    public init(name: String, eventLoop: NetEventLoop) throws(NetBackendError) {
        let formatter = NetmapRingFormatter(transmitRings: 1, receiveRings: 1, slots: Self.slots, bufferSize: Self.bufferSize)
        memory = try SharedRingMemory.create(name: "netbe \(name)", size: formatter.size)
        formatter.format(memory.memory, name: String(name.prefix(15)))
        let layout: NetmapInterfaceLayout
        do { layout = try memory.memory.interface(at: 0) } catch { throw .invalidArgument("\(name): \(error)") }
        fromClient = NetmapRingReceiver(layout.transmit[0], role: .kernel)
        toClient = NetmapRingSender(layout.receive[0], role: .kernel)
        do throws(SystemCallError) {
            kick = try RingKick.make()
            do { wake = try RingKick.make() } catch { kick.close(); throw error }
        } catch {
            throw .system(error)
        }
        super.init(spec: try BackendSpec(parsing: "vale"), kind: "vale", name: name, eventLoop: eventLoop)
        try watch(fd: kick.fd)
    }

    deinit {
        kick.close()
        wake.close()
    }

    /// What travels to the client with `ok`: the memfd and the two eventfds.
    var descriptors: [Int32] { [memory.fd, kick.fd, wake.fd] }

    /// Bad indices and slots the client wrote so far.
    public var faults: NetmapPeerFaults {
        var f = fromClient.faults
        f.invalidIndex &+= toClient.faults.invalidIndex
        f.invalidSlot &+= toClient.faults.invalidSlot
        return f
    }

    /// The switch may hand the client what it accepted, and take from it what it may give.
    public override var capabilities: VirtioNetFeatures { clientFeatures.mirrored.intersection(Negotiation.inSoftware) }
    public override var supportedHeaderLengths: [Int] { [SwitchControl.ringHeaderLength] }

    public override func configure(features: VirtioNetFeatures, vnetHeaderLength: Int) throws(NetBackendError) -> Int {
        guard vnetHeaderLength == SwitchControl.ringHeaderLength else {
            throw .invalidArgument("\(name): the rings carry a 12-byte virtio-net header, not \(vnetHeaderLength)")
        }
        return vnetHeaderLength
    }

    public override var hasBufferedFrames: Bool { fromClient.filledSlots > 0 }

    public override func send(_ frame: UnsafeBufferPointer<iovec>, more: Bool) throws(NetBackendError) -> SendResult {
        let outcome = toClient.send(frame)
        switch outcome {
        case .queued:
            if !more { try flush() }
            return .sent(IOVectors.length(of: frame))
        case .noSpace:
            // The client's RX ring is full: it is slow; the switch drops for it alone.
            return .wouldBlock
        case .tooLarge, .peerFault:
            let reason = outcome.dropReason!
            statistics.countDrop(reason)
            return .dropped(reason)
        }
    }

    public override func flush() throws(NetBackendError) {
        if toClient.publish() { try signal() }
    }

    public override func receive(into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> ReceiveResult {
        for attempt in 0..<2 {
            let result = fromClient.receive(into: buffers)
            if case .empty = result {
                guard attempt == 0 else { break }
                // Hand the slots back, take the kick, and look once more: a frame published
                // between the look and the reset is never missed.
                if fromClient.release() || releasedUnkicked > 0 {
                    releasedUnkicked = 0
                    try signal()
                }
                kick.consume()
                continue
            }
            if case .dropped(_, let reason) = result { statistics.countDrop(reason) }
            // A client that keeps its ring full gets slots back as we go, not only once we
            // found it empty: it fills while we drain (no ping-pong of whole rings).
            if fromClient.unreleasedFrames >= Self.releaseEvery {
                releasedUnkicked &+= fromClient.unreleasedFrames
                fromClient.release()
                if releasedUnkicked >= Self.kickEvery {
                    releasedUnkicked = 0
                    try signal()
                }
            }
            return result
        }
        return .empty
    }

    private func signal() throws(NetBackendError) {
        do { try wake.signal() } catch { throw .system(error) }
    }
}
