import ArgumentParser
import Foundation
import NetBackends

/// `netbe ring-echo` (hidden): the other process of the shared-ring tests and benchmark.
/// It attaches a sealed memfd laid out by `NetmapRingFormatter` (N TX and N RX rings),
/// plays the kernel's side of all — drains TX ring i, puts each frame back on RX ring i,
/// as a switch port looped to itself — and kicks/waits on two eventfds. Exits 0
/// after `--frames` frames, 1 when no kick comes for `--idle` seconds.
struct RingEchoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ring-echo",
        abstract: "Internal: echo frames between the two rings of a shared netmap-format memfd.",
        shouldDisplay: false
    )

    @Option(name: .long, help: "The inherited memfd holding the rings.")
    var memfd: Int32
    @Option(name: .long, help: "eventfd the other side writes after it published.")
    var kick: Int32
    @Option(name: .long, help: "eventfd this side writes after it published.")
    var wake: Int32
    @Option(name: .long, help: "Exit 0 after echoing this many frames.")
    var frames: Int
    @Option(name: .long, help: "Give up after this many seconds without a kick.")
    var idle: Int32 = 30
    @Flag(name: .long, help: "Spin on the rings instead of waiting on the eventfd (benchmark).")
    var spin = false
    @Flag(name: .long, help: "Count allocations while echoing (needs libMallocInterposerSwift.so in LD_PRELOAD).")
    var countMallocs = false

    func run() throws {
        let shared = try SharedRingMemory.attach(fd: memfd)
        let layout = try shared.memory.interface(at: 0)
        guard !layout.transmit.isEmpty, layout.transmit.count == layout.receive.count else {
            throw ValidationError("the memfd must hold as many TX as RX rings")
        }
        let drains = layout.transmit.map { NetmapRingReceiver($0, role: .kernel) }
        let fills = layout.receive.map { NetmapRingSender($0, role: .kernel) }
        let kicked = RingKick(fd: kick), waking = RingKick(fd: wake)
        let counter = countMallocs ? try MallocCounter() : nil
        let echoed = try RingEcho.run(drains: drains, fills: fills, frames: frames, spin: spin, started: { counter?.start() }) { () throws(SystemCallError) -> Bool in
            try kicked.wait(milliseconds: idle * 1000)
        } published: { () throws(SystemCallError) in
            try waking.signal()
        }
        let mallocs = counter.map { " \($0.count()) mallocs," } ?? ""
        let faults = drains.map(\.faults) + fills.map(\.faults)
        let index = faults.reduce(0) { $0 + $1.invalidIndex }, slot = faults.reduce(0) { $0 + $1.invalidSlot }
        FileHandle.standardError.write(Data("ring-echo: \(echoed) frames,\(mallocs) peer faults \(index) index \(slot) slot\n".utf8))
        if echoed < frames { throw ExitCode(1) }
    }
}

/// The echo loop, apart so that its allocation-free path is easy to see.
enum RingEcho {
    /// Moves frames from each `drains[i]` to `fills[i]` until `frames` went through; `idle`
    /// waits for a kick (false: timed out, stop), `published` tells the peer.
    static func run(drains: [NetmapRingReceiver], fills: [NetmapRingSender], frames: Int, spin: Bool,
                    started: () -> Void,
                    idle: () throws(SystemCallError) -> Bool,
                    published: () throws(SystemCallError) -> Void) throws(SystemCallError) -> Int {
        let capacity = maximumFrameLength + 64
        let buffers = drains.map { _ in UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64) }
        defer { for b in buffers { b.deallocate() } }
        // Per pair: the length of a frame taken from the drain that its fill had no room for.
        var held = [Int](repeating: 0, count: drains.count)
        var echoed = 0
        var spins = 0
        started()
        while echoed < frames {
            var moved = false
            for i in drains.indices {
                while echoed < frames {
                    if held[i] == 0 {
                        var vector = iovec(iov_base: buffers[i], iov_len: capacity)
                        let r = withUnsafePointer(to: &vector) { drains[i].receive(into: UnsafeBufferPointer(start: $0, count: 1)) }
                        guard case .frame(let n) = r else {
                            if case .empty = r { break }
                            continue  // dropped: malformed from the peer; counted by the ring
                        }
                        held[i] = n
                        moved = true
                    }
                    var out = iovec(iov_base: buffers[i], iov_len: held[i])
                    let sent = withUnsafePointer(to: &out) { fills[i].send(UnsafeBufferPointer(start: $0, count: 1)) }
                    if case .noSpace = sent { break }
                    held[i] = 0
                    if case .queued = sent { echoed += 1 }
                }
            }
            var told = false
            for f in fills where f.publish() { told = true }
            for d in drains where d.release() { told = true }
            if told { try published() }
            if moved || told {
                spins = 0
                continue
            }
            if spin {
                spins += 1
                if spins < 1 << 26 { continue }
            }
            if try !idle() { break }
            spins = 0
        }
        return echoed
    }
}

/// malloc-interposer's counters, found with dlsym when its library is preloaded: lets a
/// test see that echoing frames allocates nothing (the ring module's hot path).
struct MallocCounter {
    private typealias Call = @convention(c) () -> Void
    private typealias Stats = @convention(c) (UnsafeMutablePointer<Int64>?, UnsafeMutablePointer<Int64>?, UnsafeMutablePointer<Int64>?,
                                             UnsafeMutablePointer<Int64>?, UnsafeMutablePointer<Int64>?, UnsafeMutablePointer<Int64>?) -> Void
    private let reset: Call
    private let enable: Call
    private let stats: Stats

    init() throws {
        func find<T>(_ name: String, _: T.Type) throws -> T {
            guard let p = dlsym(UnsafeMutableRawPointer(bitPattern: 0), name) else {
                throw ValidationError("--count-mallocs: \(name) not found (preload libMallocInterposerSwift.so)")
            }
            return unsafeBitCast(p, to: T.self)
        }
        reset = try find("malloc_interposer_reset", Call.self)
        enable = try find("malloc_interposer_enable", Call.self)
        stats = try find("malloc_interposer_get_stats", Stats.self)
    }

    func start() {
        reset()
        enable()
    }

    func count() -> Int64 {
        // Locals, not an array: reading the count must not allocate itself.
        var mallocs: Int64 = 0, a: Int64 = 0, b: Int64 = 0, c: Int64 = 0, d: Int64 = 0, e: Int64 = 0
        stats(&mallocs, &a, &b, &c, &d, &e)
        return mallocs
    }
}
