import Foundation
import NetBackends
import Testing

/// The vxlan hot path allocates nothing: a tap and a `vxlan` backend (its socket in the
/// underlay namespace through `netns=`) relayed in this process on their own loop thread,
/// against the kernel's vxlan device in B, while TCP runs both ways (TSO frames cut into
/// the UDP GSO batch on send, UDP GRO reads and learning on receive). A control step
/// proves the counter works.
@Suite(.serialized) struct VxlanAllocationTests {
    @Test func relayingTapToVxlanAllocatesNothingPerFrame() throws {
        let rig = try VxlanTests.Rig()
        try rig.kernelVTEP()
        let thread = try LoopThread()
        let tap = try BackendRegistry.shared.open("tap0,netns=\(rig.guest.name),mtu=1450", on: thread.loop)
        let vxlan = try BackendRegistry.shared.open("vxlan,vni=42,local=udp:10.77.0.1:4789,remote=udp:10.77.0.2:4789,netns=\(rig.underlay.name)", on: thread.loop)
        defer { tap.close(); vxlan.close() }
        let relay = try Relay(tap, vxlan)
        try thread.sync { relay.start() }
        try rig.guest.address("tap0", "192.168.42.1/24")
        try rig.guest.waitCarrier("tap0")
        try waitUntil(10, "ping through vxlan") { rig.ping(rig.guest, "192.168.42.2", count: 1) }
        let warm = try TcpTransfer.run(from: rig.guest, to: rig.kernel, host: "192.168.42.2", port: 5311, bytes: 1 << 20, seed: 1)
        #expect(warm.sent == warm.received)
        let warmBack = try TcpTransfer.run(from: rig.kernel, to: rig.guest, host: "192.168.42.1", port: 5313, bytes: 1 << 20, seed: 3)
        #expect(warmBack.sent == warmBack.received)

        let framesBefore = try thread.sync { relay.forward.statistics.frames + relay.backward.statistics.frames }
        let m = try LoopAllocationCounter.measure(on: thread) {
            (Result { try TcpTransfer.run(from: rig.guest, to: rig.kernel, host: "192.168.42.2", port: 5312, bytes: 16 << 20, seed: 2) },
             Result { try TcpTransfer.run(from: rig.kernel, to: rig.guest, host: "192.168.42.1", port: 5314, bytes: 16 << 20, seed: 4) })
        }
        let frames = try thread.sync { relay.forward.statistics.frames + relay.backward.statistics.frames } - framesBefore
        let (sent, received) = try m.value.0.get()
        let (sentBack, receivedBack) = try m.value.1.get()
        #expect(sent == received && sentBack == receivedBack, "the transfers arrived whole")
        #expect(frames > 5_000, "\(frames) frames crossed while counting")
        #expect(m.allocations == 0, "\(m.allocations) allocations on the loop thread for \(frames) frames")
        #expect(m.controlSeen, "the counter sees loop-thread allocations")
        // The path counted is the TSO one: the tap's super-frames reach vxlan whole (the
        // relay cuts none) and vxlan cuts them into its UDP GSO batch itself.
        let (relayCut, vxlanCut, vxlanGSO) = try thread.sync {
            (relay.forward.statistics.softwareSegmented, vxlan.statistics.softwareSegmented, vxlan.statistics.gsoFrames)
        }
        #expect(vxlan.negotiatedFeatures.contains(.hostTSO4) && vxlan.vnetHeaderLength == 12, "\(vxlan.negotiatedFeatures)")
        #expect(relayCut == 0 && vxlanCut > 100 && vxlanCut == vxlanGSO, "relay cut \(relayCut), vxlan cut \(vxlanCut) of \(vxlanGSO)")
        try thread.sync { relay.stop() }
        try thread.stop()
    }
}
