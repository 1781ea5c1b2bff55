import Foundation
import NetBackends
import Testing

/// The hot path allocates nothing: two taps relayed in this process by `Relay` on its own
/// event-loop thread while a TCP transfer runs through them; malloc-interposer counts every
/// allocation that thread makes while the frames flow. A control step proves the counter
/// sees an allocation on that thread, so a zero means something.
@Suite(.serialized) struct RelayAllocationTests {
    /// With offloads (64 KiB super-frames pass through), with `offload=off` (MTU-sized
    /// frames), and offloads toward a `vnet=off` tap (super-frames cut one way, segments
    /// joined the other). Options are "A|B"; the transfer runs both ways.
    @Test(arguments: ["|", ",offload=off|,offload=off", "|,vnet=off"])
    func relayingTapToTapAllocatesNothingPerFrame(options: String) throws {
        let parts = options.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
        let a = try TestNamespace("ma"), b = try TestNamespace("mb")
        let thread = try LoopThread()
        let tapA = try BackendRegistry.shared.open("tap0,netns=\(a.name)\(parts[0])", on: thread.loop)
        let tapB = try BackendRegistry.shared.open("tap0,netns=\(b.name)\(parts[1])", on: thread.loop)
        defer { tapA.close(); tapB.close() }
        let relay = try Relay(tapA, tapB)
        try thread.sync { relay.start() }
        try a.address("tap0", "10.91.0.1/24")
        try b.address("tap0", "10.91.0.2/24")
        try a.waitCarrier("tap0")
        try b.waitCarrier("tap0")
        // Warm-up: first-use allocations (lazy state, epoll bookkeeping) happen here.
        let warm = try TcpTransfer.run(from: a, to: b, host: "10.91.0.2", port: 5301, bytes: 1 << 20, seed: 1)
        #expect(warm.sent == warm.received)
        let warmBack = try TcpTransfer.run(from: b, to: a, host: "10.91.0.1", port: 5303, bytes: 1 << 20, seed: 3)
        #expect(warmBack.sent == warmBack.received)

        let framesBefore = try thread.sync { relay.forward.statistics.frames + relay.backward.statistics.frames }
        let bytesBefore = try thread.sync { (relay.forward.statistics.bytes, relay.backward.statistics.bytes) }
        let m = try LoopAllocationCounter.measure(on: thread) {
            (Result { try TcpTransfer.run(from: a, to: b, host: "10.91.0.2", port: 5302, bytes: 32 << 20, seed: 2) },
             Result { try TcpTransfer.run(from: b, to: a, host: "10.91.0.1", port: 5304, bytes: 32 << 20, seed: 4) })
        }
        let frames = try thread.sync { relay.forward.statistics.frames + relay.backward.statistics.frames } - framesBefore
        let bytes = try thread.sync { (relay.forward.statistics.bytes, relay.backward.statistics.bytes) }
        let (sent, received) = try m.value.0.get()
        let (sentBack, receivedBack) = try m.value.1.get()
        #expect(sent == received && sentBack == receivedBack, "the transfers arrived whole")
        #expect(bytes.0 - bytesBefore.0 >= 32 << 20 && bytes.1 - bytesBefore.1 >= 32 << 20,
                "32 MiB crossed the relay each way while counting: \(bytes) bytes in \(frames) frames")
        #expect(m.allocations == 0, "\(m.allocations) allocations on the loop thread for \(frames) frames")
        #expect(m.controlSeen, "the counter sees loop-thread allocations")
        try thread.sync { relay.stop() }
        try thread.stop()
    }
}
