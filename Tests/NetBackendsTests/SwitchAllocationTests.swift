import Foundation
import MallocInterposerSwift
import NetBackends
import Synchronization
import Testing

// As in RelayAllocationTests: the hook counts allocations made on the switch's loop thread.
nonisolated(unsafe) private var switchThread = pthread_t()
private let switchThreadAllocations = Atomic<Int>(0)
nonisolated(unsafe) private let traceBuffer = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 64)
nonisolated(unsafe) private var traceAllocations = false
private typealias BacktraceCall = @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>, Int32) -> Int32
private typealias SymbolsCall = @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>, Int32, Int32) -> Void
nonisolated(unsafe) private let traceBacktrace = unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "backtrace"), to: BacktraceCall.self)
nonisolated(unsafe) private let traceSymbols = unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "backtrace_symbols_fd"), to: SymbolsCall.self)
private let countSwitchThreadAllocations: MallocInterposerSwift.AllocationHook = { _ in
    if pthread_equal(switchThread, pthread_self()) != 0 {
        switchThreadAllocations.add(1, ordering: .relaxed)
        if traceAllocations {
            let n = traceBacktrace(traceBuffer, 64)
            traceSymbols(traceBuffer, n, 2)
        }
    }
}

/// Switching allocates nothing per frame: a `SwitchServer` with its switch runs on a loop
/// thread of this process, two `netbe connect vale0:aN tap0,netns=...` processes attach
/// (one tap with offloads, one with `offload=off`, so super-frames are cut on the way),
/// and TCP runs both ways while every allocation of that thread is counted.
/// In RelayAllocationTests' serialized suite: the interposer has one hook per process, and
/// two allocation tests running at once would each replace the other's.
extension RelayAllocationTests {
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

        switchThread = try thread.sync { pthread_self() }
        MallocInterposerSwift.setAllocationHook(countSwitchThreadAllocations)
        defer { MallocInterposerSwift.setAllocationHook(nil) }
        let before = try thread.sync { sw.ports.map(\.sent.frames).reduce(0, +) }
        let cutBefore = try thread.sync { sw.port(named: "b")?.sent.softwareSegmented ?? 0 }
        switchThreadAllocations.store(0, ordering: .relaxed)
        traceAllocations = getenv("NETBE_ALLOC_TRACE") != nil
        if traceAllocations { _ = traceBacktrace(traceBuffer, 64) }
        MallocInterposerSwift.hook()
        let measured = Result { try TcpTransfer.run(from: a, to: b, host: "10.92.0.2", port: 5312, bytes: 16 << 20, seed: 2) }
        let measuredBack = Result { try TcpTransfer.run(from: b, to: a, host: "10.92.0.1", port: 5314, bytes: 16 << 20, seed: 4) }
        MallocInterposerSwift.unhook()
        traceAllocations = false
        let allocations = switchThreadAllocations.load(ordering: .relaxed)
        let frames = try thread.sync { sw.ports.map(\.sent.frames).reduce(0, +) } - before
        let cut = try thread.sync { sw.port(named: "b")?.sent.softwareSegmented ?? 0 } - cutBefore
        let (sent, received) = try measured.get()
        let (sentBack, receivedBack) = try measuredBack.get()
        #expect(sent == received && sentBack == receivedBack, "the transfers arrived whole")
        #expect(frames > 10_000, "only \(frames) frames crossed the switch while counting")
        #expect(cut > 0, "no super-frame was cut for the offload=off port while counting")
        #expect(allocations == 0, "\(allocations) allocations on the switch's thread for \(frames) frames")

        // Control: an allocation on that thread while counting is seen.
        switchThreadAllocations.store(0, ordering: .relaxed)
        MallocInterposerSwift.hook()
        _ = try thread.sync { () -> Int in
            allocationControlBlock = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 16)
            return 1
        }
        MallocInterposerSwift.unhook()
        allocationControlBlock?.deallocate()
        allocationControlBlock = nil
        #expect(switchThreadAllocations.load(ordering: .relaxed) >= 1, "the counter sees the switch thread's allocations")
    }
}
