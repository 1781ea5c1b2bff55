#if canImport(Glibc)
import Glibc
#endif

/// A netmap port, as bhyve's netmap backend: `netmap:IFNAME` (a NIC in netmap mode) and,
/// where the kernel module is loaded, `valeX:Y` (a port of the kernel's VALE switch).
///
/// Unlike the seed, every NIC ring of the port is served: `receive` takes the rings in
/// turn (the seed read ring 0 only and spun on multiqueue NICs), `send` fills one ring
/// and moves to the next when it is full. Frames leave at `flush()` (or a send with
/// `more: false`): one NIOCTXSYNC per batch. A frame that does not fit the free slots is
/// dropped whole and counted `no_space`; a ring with no free slot at all is back-pressure
/// (`.wouldBlock`, then the writable handler once netmap's poll says the TX rings have room).
/// Capabilities as the seed computes them: the port's offloads if it takes a 12-byte
/// virtio-net header (NETMAP_REQ_PORT_HDR_SET, VALE ports), none otherwise.
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

    let port: NetmapPort
    private let headerLengths: [Int]
    private var transmitRing = 0
    private var receiveRing = 0

    /// Opens `netmap:IF` or (VALE) `valeX:Y`; no options.
    public init(spec: BackendSpec, eventLoop: NetEventLoop) throws(NetBackendError) {
        try SpecReader(spec).finish(kind: "netmap")
        let portName = try Self.portName(spec)
        port = try NetmapPort(portName: portName, label: spec.name)
        headerLengths = Self.probeHeaderLengths(port)
        super.init(spec: spec, kind: spec.name.hasPrefix("netmap:") ? "netmap" : "vale", name: portName, eventLoop: eventLoop)
        do throws(NetBackendError) {
            try watch(fd: port.fd)
        } catch {
            port.close()
            throw error
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

    /// As the seed's netmap_get_cap: a 12-byte header accepted means offloads. The port's
    /// own length is put back afterwards.
    private static func probeHeaderLengths(_ port: NetmapPort) -> [Int] {
        guard let previous = try? port.headerLength() else { return [0] }
        guard (try? port.setHeaderLength(VirtioNetHeader.mergeableLength)) != nil else { return [0] }
        try? port.setHeaderLength(previous)
        return [0, 10, 12]
    }

    private var carriesHeader: Bool { headerLengths.count > 1 }

    public override var capabilities: VirtioNetFeatures { carriesHeader ? Self.offloads : [] }
    public override var supportedHeaderLengths: [Int] { headerLengths }

    /// The port takes the frontend's length (PORT_HDR_SET) when it can carry a header.
    public override func configure(features: VirtioNetFeatures, vnetHeaderLength: Int) throws(NetBackendError) -> Int {
        guard carriesHeader else { return 0 }
        do {
            try port.setHeaderLength(vnetHeaderLength)
        } catch {
            throw .system(error)
        }
        return vnetHeaderLength
    }

    // MARK: send

    public override func send(_ frame: UnsafeBufferPointer<iovec>, more: Bool) throws(NetBackendError) -> SendResult {
        let rings = port.transmit
        for pass in 0..<2 {
            var full = 0
            for k in 0..<rings.count {
                let i = (transmitRing + k) % rings.count
                switch rings[i].send(frame) {
                case .queued:
                    transmitRing = i
                    if !more { try flush() }
                    return .sent(IOVectors.length(of: frame))
                case .tooLarge, .peerFault:
                    statistics.countDrop(.malformed)
                    return .dropped(.malformed)
                case .noSpace:
                    if rings[i].freeSlots == 0 { full += 1 }
                }
            }
            if pass == 0 {
                // Every ring tried: let the kernel send what is queued and free slots, once.
                try sync()
                for r in rings { r.refresh() }
            } else if full == rings.count {
                armWritable()
                return .wouldBlock
            }
        }
        statistics.countDrop(.noSpace)
        return .dropped(.noSpace)
    }

    /// Publishes every ring's queued frames and asks the kernel to send them (NIOCTXSYNC).
    public override func flush() throws(NetBackendError) {
        var any = false
        for r in port.transmit where r.publish() { any = true }
        if any { try sync() }
    }

    private func sync() throws(NetBackendError) {
        for r in port.transmit { r.publish() }
        do { try port.transmitSync() } catch { throw .system(error) }
    }

    // MARK: receive

    /// The next frame of any RX ring, the rings taken in turn; `.empty` once all are empty
    /// after handing consumed slots back and one NIOCRXSYNC.
    public override func receive(into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> ReceiveResult {
        let rings = port.receive
        for attempt in 0..<2 {
            for _ in 0..<rings.count {
                let r = rings[receiveRing]
                let result = r.receive(into: buffers)
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
            do { try port.receiveSync() } catch { throw .system(error) }
        }
        return .empty
    }

    public override func peekReceiveLength() throws(NetBackendError) -> Int {
        for r in port.receive {
            let n = r.peekLength()
            if n > 0 { return n }
        }
        return 0
    }

    public override func close() {
        super.close()
        closePort()
    }

    private var closed = false
    private func closePort() {
        guard !closed else { return }
        closed = true
        port.close()
    }
}
