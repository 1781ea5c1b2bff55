/// One port of a `NetSwitch`: a backend, its output (`Egress`), and its counters.
public final class SwitchPort: @unchecked Sendable {
    /// The port's name on its switch (`vm1` of `vale0:vm1`).
    public let name: String
    public let backend: NetBackend
    /// Its slot in the switch (what the MAC table stores).
    public let index: Int32
    /// Frames the port handed to the switch; drops on the way in (too short, its backend's).
    public let received = BackendStatistics()
    /// Frames and bytes the switch sent to the port, GSO frames, software cuts, and drops on
    /// the way out (`queue_full`: the port could take no more now, dropped for it alone).
    public var sent: BackendStatistics { egress.statistics }
    /// Frames whose destination was learned behind this same port: not sent anywhere.
    @exclusivity(unchecked) public internal(set) var filtered: UInt64 = 0

    /// A `let`, renegotiated in place (`Egress.renegotiated`): the switch reaches it per
    /// frame without a retain.
    let egress: Egress
    /// Sent to in the current batch: flushed at its end.
    @exclusivity(unchecked) var touched = false
    /// A send or receive failed: detached at the end of the batch.
    @exclusivity(unchecked) var failure: NetBackendError? { didSet { failed = failure != nil } }
    /// `failure != nil`, as a plain flag tested per frame (no copy of the error).
    @exclusivity(unchecked) private(set) var failed = false

    init(name: String, backend: NetBackend, index: Int32) {
        self.name = name
        self.backend = backend
        self.index = index
        egress = Egress(to: backend)
    }

    /// Every drop by reason, in and out together, zeros included.
    public var dropsByReason: [(DropReason, UInt64)] {
        DropReason.allCases.map {
            ($0, received.drops($0) &+ sent.drops($0) &+ backend.statistics.lostAfterSend($0) &+ backend.statistics.lostBeforeReceive($0))
        }
    }
}
