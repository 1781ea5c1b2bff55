import Foundation
import NetBackends

/// The netmap backend over shared rings served by `netbe ring-echo` in another process:
/// frames the rig sends on the loop thread come back to the backend's RX rings with an
/// eventfd kick, as a kernel's would after a sync. (No /dev/netmap here: the kernel
/// driver differs only in its sync.)
final class NetmapTrafficRig: TrafficRig, @unchecked Sendable {   // its sends run on the loop thread only
    private let helper: SpawnedHelper
    private let shared: SharedRingMemory
    private var flood: FloodThread?

    init(loop: NetEventLoop) throws {
        let format = NetmapRingFormatter(transmitRings: 1, receiveRings: 1, slots: 256, bufferSize: 2048)
        shared = try SharedRingMemory.create(name: "netbe-rig", size: format.size)
        format.format(shared.memory, name: "vale0:rig")
        let kick = try RingKick.make(), wake = try RingKick.make()
        helper = try SpawnedHelper([try NetbeBinary.path, "ring-echo", "--memfd", "3", "--kick", "4", "--wake", "5",
                                    "--frames", "\(Int32.max)", "--idle", "60"], fds: [shared.fd, kick.fd, wake.fd])
        super.init(backend: try NetmapBackend(sharedMemory: shared, kick: kick, wake: wake,
                                              spec: try BackendSpec(parsing: "vale0:rig"), eventLoop: loop))
        try awaitEcho()
    }

    /// One frame there and back before the rig is handed out (the loop is not running
    /// yet, so this thread may drive the backend): a helper that starts slowly (a
    /// sanitizer's start-up on a loaded machine) must not look like frames never coming.
    private func awaitEcho() throws {
        send(1)
        let buffer = FrameBuffer()
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if case .frame = try backend.receive(into: buffer) { return }
            usleep(1000)
        }
        throw TestFailure("the ring-echo helper sent nothing back within 30 s: \(diagnostics)")
    }

    /// Sends `count` frames (dropped ones again later) on the loop thread; the echo
    /// brings them back.
    private func send(_ count: Int) {
        var left = count
        while left > 0 {
            let r = try? Self.frame.withUnsafeBytes { try backend.send($0, more: left > 1) }
            guard case .sent = r else { break }
            left -= 1
        }
        try? backend.flush()
    }

    override func burst(_ count: Int, _ lt: LoopThread) throws {
        try lt.sync { self.send(count) }
    }

    override func startFlood(_ lt: LoopThread) throws {
        let loop = lt.loop
        weak let rig = self
        flood = FloodThread {
            loop.execute { rig?.send(8) }
            return false   // paces the flood (FloodThread sleeps 100 µs)
        }
    }

    override var diagnostics: String {
        let b = backend as! NetmapBackend
        return "ring-echo \(helper.status()), stderr: \(helper.stderr); peer faults \(b.peerFaults); \(b.statistics.snapshot())"
    }

    override func stopFlood() {
        flood?.stop()
        flood = nil
    }
}
