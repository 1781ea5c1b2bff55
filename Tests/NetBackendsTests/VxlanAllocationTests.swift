import Foundation
import MallocInterposerSwift
import NetBackends
import Synchronization
import Testing

nonisolated(unsafe) private var vxlanLoopThread = pthread_t()
private let vxlanLoopAllocations = Atomic<Int>(0)
private let countVxlanLoopAllocations: MallocInterposerSwift.AllocationHook = { _ in
    if pthread_equal(vxlanLoopThread, pthread_self()) != 0 {
        vxlanLoopAllocations.add(1, ordering: .relaxed)
    }
}

/// The vxlan hot path allocates nothing: a tap and a `vxlan` backend (its socket in the
/// underlay namespace through `netns=`) relayed in this process on their own loop thread,
/// against the kernel's vxlan device in B, while TCP runs both ways (TSO frames cut into
/// the UDP GSO batch on send, UDP GRO reads and learning on receive). A control step proves the counter works.
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

        vxlanLoopThread = try thread.sync { pthread_self() }
        MallocInterposerSwift.setAllocationHook(countVxlanLoopAllocations)
        defer { MallocInterposerSwift.setAllocationHook(nil) }
        let framesBefore = try thread.sync { relay.forward.statistics.frames + relay.backward.statistics.frames }
        vxlanLoopAllocations.store(0, ordering: .relaxed)
        MallocInterposerSwift.hook()
        let there = Result { try TcpTransfer.run(from: rig.guest, to: rig.kernel, host: "192.168.42.2", port: 5312, bytes: 16 << 20, seed: 2) }
        let back = Result { try TcpTransfer.run(from: rig.kernel, to: rig.guest, host: "192.168.42.1", port: 5314, bytes: 16 << 20, seed: 4) }
        MallocInterposerSwift.unhook()
        let allocations = vxlanLoopAllocations.load(ordering: .relaxed)
        let frames = try thread.sync { relay.forward.statistics.frames + relay.backward.statistics.frames } - framesBefore
        let (sent, received) = try there.get()
        let (sentBack, receivedBack) = try back.get()
        #expect(sent == received && sentBack == receivedBack, "the transfers arrived whole")
        #expect(frames > 5_000, "\(frames) frames crossed while counting")
        #expect(allocations == 0, "\(allocations) allocations on the loop thread for \(frames) frames")
        // The path counted is the TSO one: the tap's super-frames reach vxlan whole (the
        // relay cuts none) and vxlan cuts them into its UDP GSO batch itself.
        let (relayCut, vxlanCut, vxlanGSO) = try thread.sync {
            (relay.forward.statistics.softwareSegmented, vxlan.statistics.softwareSegmented, vxlan.statistics.gsoFrames)
        }
        #expect(vxlan.negotiatedFeatures.contains(.hostTSO4) && vxlan.vnetHeaderLength == 12, "\(vxlan.negotiatedFeatures)")
        #expect(relayCut == 0 && vxlanCut > 100 && vxlanCut == vxlanGSO, "relay cut \(relayCut), vxlan cut \(vxlanCut) of \(vxlanGSO)")

        vxlanLoopAllocations.store(0, ordering: .relaxed)
        MallocInterposerSwift.hook()
        let made = try thread.sync { () -> Int in
            // Kept in a global until after unhook: an allocation freed at once may be
            // optimised away, and the control would prove nothing.
            allocationControlBlock = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 16)
            return 1
        }
        MallocInterposerSwift.unhook()
        allocationControlBlock?.deallocate()
        allocationControlBlock = nil
        #expect(made == 1 && vxlanLoopAllocations.load(ordering: .relaxed) >= 1, "the counter sees loop-thread allocations")
        try thread.sync { relay.stop() }
        try thread.stop()
    }
}
