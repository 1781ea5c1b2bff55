import NetBackends

/// `null,generate=64`: frames always wait, so a burst or a flood is already there.
final class NullTrafficRig: TrafficRig {
    init(loop: NetEventLoop) throws {
        super.init(backend: try BackendRegistry.shared.open("null,generate=64", on: loop))
    }

    override func burst(_ count: Int, _ lt: LoopThread) throws {}
    override func startFlood(_ lt: LoopThread) throws {}
}
