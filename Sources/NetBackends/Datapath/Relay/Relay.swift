/// Joins two backends both ways (what `netbe connect` runs). On `start` it negotiates
/// offloads so that each side is handed only what the other accepts on send, sets each
/// side's preferred header length, and relays on the backends' event loop.
public final class Relay: @unchecked Sendable {
    public let a: NetBackend
    public let b: NetBackend
    public let forward: RelayDirection     // a -> b
    public let backward: RelayDirection    // b -> a

    public init(_ a: NetBackend, _ b: NetBackend, capture: PcapWriter? = nil) throws(NetBackendError) {
        precondition(a.eventLoop === b.eventLoop, "both backends must run on the same event loop")
        self.a = a
        self.b = b
        let capsA = a.capabilities
        let capsB = b.capabilities
        // A side that moves super-frames cheaply (a tap) gets them both ways even when the
        // other side can neither give nor take them: the directions cut and join in
        // software, which costs less than a read or write per segment.
        let softA = a.prefersSuperFrames && a.preferredHeaderLength > 0
        let softB = b.prefersSuperFrames && b.preferredHeaderLength > 0
        try a.setCapabilities(Negotiation.features(for: capsA, peer: capsB, software: softA), vnetHeaderLength: a.preferredHeaderLength)
        try b.setCapabilities(Negotiation.features(for: capsB, peer: capsA, software: softB), vnetHeaderLength: b.preferredHeaderLength)
        forward = RelayDirection(from: a, to: b, capture: capture)
        backward = RelayDirection(from: b, to: a, capture: capture)
    }

    /// Installs the handlers and enables receive on both sides. A backend error stops
    /// the loop with that error (a failed `flush` too). The handlers hold the directions,
    /// which hold the backends: `stop()` (or closing a backend) removes them.
    public func start() {
        let loop = a.eventLoop
        let f = forward, r = backward
        a.setReceiveHandler { do throws(NetBackendError) { try f.pump() } catch { loop.stop(throwing: error) } }
        b.setReceiveHandler { do throws(NetBackendError) { try r.pump() } catch { loop.stop(throwing: error) } }
        b.setWritableHandler { do throws(NetBackendError) { try f.resume() } catch { loop.stop(throwing: error) } }
        a.setWritableHandler { do throws(NetBackendError) { try r.resume() } catch { loop.stop(throwing: error) } }
        // A side whose peer is away shows the other side link down (a tap loses carrier).
        // A side whose own peer takes fewer offloads than it was granted (a vhost-user
        // guest) has the output toward it cut and checksum for it from then on.
        b.setRenegotiationHandler { f.egress.renegotiated() }
        a.setRenegotiationHandler { r.egress.renegotiated() }
        a.setLinkStateHandler { [b] up in do throws(NetBackendError) { try b.setCarrier(up) } catch { loop.stop(throwing: error) } }
        b.setLinkStateHandler { [a] up in do throws(NetBackendError) { try a.setCarrier(up) } catch { loop.stop(throwing: error) } }
        do throws(NetBackendError) {
            try a.setCarrier(b.isLinkUp)
            try b.setCarrier(a.isLinkUp)
        } catch {
            loop.stop(throwing: error)
        }
        a.enableReceive()
        b.enableReceive()
    }

    /// Stops for good, from any thread: removes the handlers (waiting for a running one),
    /// so that no late writable or receive event restarts a direction, then disables
    /// receive on both sides. The relay and its directions are freed once released.
    public func stop() {
        a.removeHandlers()
        b.removeHandlers()
        forward.stop()
        backward.stop()
        a.disableReceive()
        b.disableReceive()
    }
}
