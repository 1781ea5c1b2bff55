import Foundation
import NetBackends
import Testing

/// Switching allocates nothing per frame: a `SwitchServer` with its switch runs on a loop
/// thread of this process, two `netbe connect vale0:aN tap0,netns=...` processes attach
/// (one tap with offloads, one with `offload=off`, so super-frames are cut on the way),
/// and TCP runs both ways while every allocation of that thread is counted.
/// `LoopAllocationCounter` takes turns with the other allocation suites (one hook per process).
@Suite(.serialized) struct SwitchAllocationTests {
    @Test func switchingBetweenSharedRingPortsAllocatesNothingPerFrame() throws {
        try requireDebianPython()
        let directory = TrafficRig.tempPath("swalloc")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = directory + "/switch.sock"
        let thread = try LoopThread()
        let sw = NetSwitch(name: "vale0", eventLoop: thread.loop)
        let server = try SwitchServer(socketPath: socket, switches: [sw], eventLoop: thread.loop)
        defer { _ = try? thread.sync { server.stop() }; _ = try? thread.stop() }
        let a = try TestNamespace("sa"), b = try TestNamespace("sb")
        var clients = [try NetbeBinary.start(["connect", "vale0:a,switch=\(socket)", "tap0,netns=\(a.name)"]),
                       try NetbeBinary.start(["connect", "vale0:b,switch=\(socket)", "tap0,netns=\(b.name),offload=off"])]
        defer { clients = [] }
        try a.address("tap0", "10.92.0.1/24")
        try b.address("tap0", "10.92.0.2/24")
        try a.waitCarrier("tap0")
        try b.waitCarrier("tap0")
        let warm = try TcpTransfer.run(from: a, to: b, host: "10.92.0.2", port: 5311, bytes: 1 << 20, seed: 1)
        #expect(warm.sent == warm.received)
        let warmBack = try TcpTransfer.run(from: b, to: a, host: "10.92.0.1", port: 5313, bytes: 1 << 20, seed: 3)
        #expect(warmBack.sent == warmBack.received)

        let before = try thread.sync { sw.ports.map(\.sent.frames).reduce(0, +) }
        let cutBefore = try thread.sync { sw.port(named: "b")?.sent.softwareSegmented ?? 0 }
        let m = try LoopAllocationCounter.measure(on: thread) {
            (Result { try TcpTransfer.run(from: a, to: b, host: "10.92.0.2", port: 5312, bytes: 16 << 20, seed: 2) },
             Result { try TcpTransfer.run(from: b, to: a, host: "10.92.0.1", port: 5314, bytes: 16 << 20, seed: 4) })
        }
        let frames = try thread.sync { sw.ports.map(\.sent.frames).reduce(0, +) } - before
        let cut = try thread.sync { sw.port(named: "b")?.sent.softwareSegmented ?? 0 } - cutBefore
        let (sent, received) = try m.value.0.get()
        let (sentBack, receivedBack) = try m.value.1.get()
        #expect(sent == received && sentBack == receivedBack, "the transfers arrived whole")
        #expect(frames > 10_000, "only \(frames) frames crossed the switch while counting")
        #expect(cut > 0, "no super-frame was cut for the offload=off port while counting")
        #expect(m.allocations == 0, "\(m.allocations) allocations on the switch's thread for \(frames) frames")
        #expect(m.controlSeen, "the counter sees the switch thread's allocations")
    }
}
