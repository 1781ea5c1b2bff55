import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A netmap port, as bhyve's netmap backend: `netmap:IFNAME` (a NIC in netmap mode) and,
/// where the kernel module is loaded, `valeX:Y` (a port of the kernel's VALE switch); or,
/// through `init(sharedMemory:...)`, a port whose rings a peer process serves over shared
/// memory (the user-space switch).
///
/// Unlike the seed, every ring of the port is served: `receive` takes the RX rings in
/// turn (the seed read ring 0 only and spun on multiqueue NICs), `send` fills one TX ring
/// and moves to the next when it is full. Frames leave at `flush()` (or a send with
/// `more: false`): one sync per batch. A frame that does not fit the free slots even after
/// a sync is dropped whole and counted `no_space`; TX rings with no free slot at all are
/// back-pressure (`.wouldBlock`, then the writable handler once slots come back).
/// Capabilities as the seed computes them: the seed's offloads if the port carries a
/// 12-byte virtio-net header (NETMAP_REQ_PORT_HDR_SET, VALE ports), none otherwise.
public final class NetmapBackend: NetBackend, @unchecked Sendable {
    /// The seed's NETMAP_FEATURES.
    static let offloads: VirtioNetFeatures = [.csum, .hostTSO4, .hostTSO6, .hostUFO, .guestCsum,
                                              .guestTSO4, .guestTSO6, .guestUFO, .mrgRxbuf]

    public static let kind = BackendKind(
        name: "netmap", prefixes: ["netmap:"],
        summary: "netmap port on a NIC (netmap:IF), through the netmap kernel module",
        availability: {
            NetmapPort.deviceExists
                ? .untested("written against netmap's API 14 but never run against a netmap kernel")
                : .untested("no /dev/netmap")
        },
        open: { (spec, loop) throws(NetBackendError) in try NetmapBackend(spec: spec, eventLoop: loop) }
    )

    let driver: NetmapPortDriver
    private var source: EventSource?
    private let receiveOn = Atomic<Bool>(false)
    // Loop thread only.
    @exclusivity(unchecked) private var transmitRing = 0
    @exclusivity(unchecked) private var receiveRing = 0
    @exclusivity(unchecked) private var waitingForRoom = false
    private var closed = false

    /// Opens `netmap:IF` or (VALE) `valeX:Y` through `/dev/netmap`; no options.
    public convenience init(spec: BackendSpec, eventLoop: NetEventLoop) throws(NetBackendError) {
        try SpecReader(spec).finish(kind: "netmap")
        let portName = try Self.portName(spec)
        let port = try NetmapPort(portName: portName, label: spec.name)
        try self.init(spec: spec, kind: spec.name.hasPrefix("netmap:") ? "netmap" : "vale", name: portName,
                      driver: port, eventLoop: eventLoop)
    }

    /// A port over netmap-format rings in `sharedMemory` (laid out by `NetmapRingFormatter`),
    /// served from the kernel side by a peer process that reads `kick` and writes `wake`;
    /// frames carry a `headerLength`-byte virtio-net header as the two sides agreed.
    /// Takes ownership of both eventfds. `spec` names the port (its kind is `vale`).
    public convenience init(sharedMemory: SharedRingMemory, kick: RingKick, wake: RingKick, headerLength: Int = 0,
                            spec: BackendSpec, eventLoop: NetEventLoop) throws(NetBackendError) {
        let port = try NetmapSharedPort(memory: sharedMemory, kick: kick, wake: wake, headerLength: headerLength)
        try self.init(spec: spec, kind: "vale", name: spec.name, driver: port, eventLoop: eventLoop)
    }

    init(spec: BackendSpec, kind: String, name: String, driver: NetmapPortDriver, eventLoop: NetEventLoop) throws(NetBackendError) {
        self.driver = driver
        super.init(spec: spec, kind: kind, name: name, eventLoop: eventLoop)
        do {
            source = try eventLoop.watch(fd: driver.fd, name: "\(kind) \(name)") { [unowned self] ready in self.ready(ready) }
        } catch {
            driver.close()
            closed = true
            throw .system(error)
        }
    }

    deinit { close() }

    /// The kernel's name for the port: `netmap:IF` -> `IF`; a VALE name as given.
    static func portName(_ spec: BackendSpec) throws(NetBackendError) -> String {
        let name = spec.name.hasPrefix("netmap:") ? String(spec.name.dropFirst("netmap:".count)) : spec.name
        let allowed = name.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x5f || c == 0x2e || c == 0x2d || c == 0x3a
        }
        guard !name.isEmpty, name.utf8.count < 16, allowed else {
            throw .badSpec("bad spec '\(spec.text)': '\(name)' is not an interface or VALE port name (up to 15 of [0-9A-Za-z_.-:])")
        }
        return name
    }

    private var carriesHeader: Bool { driver.headerLengths.contains { $0 > 0 } }

    public override var capabilities: VirtioNetFeatures { carriesHeader ? Self.offloads : [] }
    public override var supportedHeaderLengths: [Int] { driver.headerLengths }

    /// The port takes the frontend's length when it can carry a header (PORT_HDR_SET).
    public override func configure(features: VirtioNetFeatures, vnetHeaderLength: Int) throws(NetBackendError) -> Int {
        guard carriesHeader, driver.headerLengths.contains(vnetHeaderLength) else { return 0 }
        try driver.setHeaderLength(vnetHeaderLength)
        return vnetHeaderLength
    }

    // MARK: readiness

    private func ready(_ ready: NetEventLoop.Interest) {
        if ready.contains(.write) {
            source?.disable(.write)
            roomMayBeBack()
        }
        if ready.contains(.read) {
            if waitingForRoom && driver.signalsRoomOnRead { roomMayBeBack() }
            if receiveOn.load(ordering: .acquiring) {
                notifyReceive()
            } else {
                // Woken only to hear about TX room: take the kick, keep the interest right.
                driver.acknowledge()
                updateReadInterest()
            }
        }
    }

    private func roomMayBeBack() {
        guard waitingForRoom else { return }
        if driver.transmit.contains(where: { $0.refresh() > 0 }) {
            waitingForRoom = false
            updateReadInterest()
            notifyWritable()
        } else if !driver.signalsRoomOnRead {
            source?.enable(.write)
        }
    }

    /// Read interest while receiving, or while waiting for room that arrives as a kick.
    private func updateReadInterest() {
        if receiveOn.load(ordering: .acquiring) || (waitingForRoom && driver.signalsRoomOnRead) {
            source?.enable(.read)
        } else {
            source?.disable(.read)
        }
    }

    /// Receive switched on or off (the handler gate already allows or stops the calls;
    /// always on the loop thread). Off still keeps read interest while a send waits for a
    /// kick that means "TX room is back".
    public override func watchReceive(_ on: Bool) {
        receiveOn.store(on, ordering: .releasing)
        if on {
            source?.enable(.read)
            driver.rearm()
        } else {
            updateReadInterest()
        }
    }

    /// Frames already visible in an RX ring need no new kick: a handler that stopped
    /// mid-batch is called again for them.
    public override var hasBufferedFrames: Bool { driver.receive.contains { $0.filledSlots > 0 } }

    // MARK: send

    public override func send(_ frame: UnsafeBufferPointer<iovec>, more: Bool) throws(NetBackendError) -> SendResult {
        let rings = driver.transmit
        for pass in 0..<2 {
            var full = 0
            for k in 0..<rings.count {
                let i = (transmitRing + k) % rings.count
                let outcome = rings[i].send(frame)
                switch outcome {
                case .queued:
                    transmitRing = i
                    if !more { try flush() }
                    return .sent(IOVectors.length(of: frame))
                case .tooLarge, .peerFault:
                    let reason = outcome.dropReason!
                    statistics.countDrop(reason)
                    return .dropped(reason)
                case .noSpace:
                    if rings[i].freeSlots == 0 { full += 1 }
                }
            }
            if pass == 0 {
                // Every ring tried: have what is queued sent and slots freed, once.
                for r in rings { r.publish() }
                try driver.transmitSync()
                for r in rings { r.refresh() }
            } else if full == rings.count {
                waitingForRoom = true
                if driver.signalsRoomOnRead { updateReadInterest() } else { source?.enable(.write) }
                return .wouldBlock
            }
        }
        statistics.countDrop(.noSpace)
        return .dropped(.noSpace)
    }

    /// Publishes every ring's queued frames and syncs once if there were any.
    public override func flush() throws(NetBackendError) {
        var any = false
        for r in driver.transmit where r.publish() { any = true }
        if any { try driver.transmitSync() }
    }

    // MARK: receive

    /// The next frame of any RX ring, the rings taken in turn; `.empty` once all are empty
    /// after handing consumed slots back and one sync.
    public override func receive(into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> ReceiveResult {
        let rings = driver.receive
        for attempt in 0..<2 {
            for _ in 0..<rings.count {
                let result = rings[receiveRing].receive(into: buffers)
                switch result {
                case .empty:
                    receiveRing = receiveRing + 1 == rings.count ? 0 : receiveRing + 1
                case .dropped(_, let reason):
                    statistics.countDrop(reason)
                    return result
                case .frame:
                    return result
                }
            }
            guard attempt == 0 else { break }
            for r in rings { r.release() }
            try driver.receiveSync()
            // The kick just taken may also have meant "TX slots are back": keep it for
            // `ready`, which calls the writable handler (never from inside receive).
            if waitingForRoom && driver.signalsRoomOnRead && driver.transmit.contains(where: { $0.refresh() > 0 }) {
                driver.rearm()
            }
        }
        return .empty
    }

    public override func peekReceiveLength() throws(NetBackendError) -> Int {
        for r in driver.receive {
            let n = r.peekLength()
            if n > 0 { return n }
        }
        return 0
    }

    /// Peer faults (bad indices and slots) over all rings, as counted so far.
    public var peerFaults: NetmapPeerFaults {
        var f = NetmapPeerFaults()
        for r in driver.transmit { f.invalidIndex += r.faults.invalidIndex; f.invalidSlot += r.faults.invalidSlot }
        for r in driver.receive { f.invalidIndex += r.faults.invalidIndex; f.invalidSlot += r.faults.invalidSlot }
        return f
    }

    public override func close() {
        super.close()
        source?.cancel()
        source = nil
        guard !closed else { return }
        closed = true
        driver.close()
    }
}
