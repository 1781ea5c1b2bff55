import Foundation
import NetBackends

/// A `vale` port of a `netbe switch` the rig starts (its own socket), and a second port
/// of that switch, opened here, that sends the rig's broadcast frame: the switch floods
/// it to the port under test through its shared rings.
final class ValeTrafficRig: TrafficRig, @unchecked Sendable {   // the peer is used under `lock`
    private let daemon: TestProcess
    private let directory: String
    private let peerLoop: NetEventLoop
    private let peer: NetBackend
    private let lock = NSLock()
    private var flood: FloodThread?

    init(loop: NetEventLoop) throws {
        directory = TrafficRig.tempPath("vale")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let socket = directory + "/switch.sock"
        daemon = try NetbeBinary.start(["switch", "vale0", "--socket", socket])
        // No loop runs for the peer: the calling thread (under `lock`) is its loop thread.
        peerLoop = try NetEventLoop()
        peer = try BackendRegistry.shared.open("vale0:peer,switch=\(socket)", on: peerLoop)
        try peer.setCapabilities([], vnetHeaderLength: 0)
        super.init(backend: try BackendRegistry.shared.open("vale0:rig,switch=\(socket)", on: loop))
    }

    /// Sends up to `count` frames; false when the peer's ring was full.
    private func send(_ count: Int) -> Bool {
        lock.withLock {
            var all = true
            for i in 0..<count {
                let r = try? Self.frame.withUnsafeBytes { try peer.send($0, more: i + 1 < count) }
                guard case .sent = r else { all = false; break }
            }
            try? peer.flush()
            // Take the switch's kicks and hand back what it sent us, so nothing piles up.
            while case .frame? = try? peer.discardReceived() {}
            return all
        }
    }

    override func burst(_ count: Int, _ lt: LoopThread) throws {
        var left = count
        while left > 0 {
            let n = min(left, 256)
            if !send(n) { throw TestFailure("the vale peer's ring was full") }
            left -= n
        }
    }

    override func startFlood(_ lt: LoopThread) throws {
        weak let rig = self
        flood = FloodThread { rig?.send(8) ?? false }
    }

    override func stopFlood() {
        flood?.stop()
        flood = nil
    }

    override func close() {
        super.close()
        lock.withLock { peer.close() }
        _ = try? daemon.stop(SIGTERM)
        try? FileManager.default.removeItem(atPath: directory)
    }
}
