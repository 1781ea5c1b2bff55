// rings-bench: frames per second through the ring module (NetmapRingSender on the user
// side of a netmap-format TX ring, NetmapRingReceiver on its kernel side, as a switch
// drains a port), between two threads and between two processes sharing a sealed memfd.
// One publish (head) per batch on the sending side, one release (tail) per batch on the
// receiving side; both sides spin (sched_yield after 64 empty looks) instead of kicking,
// so the figures are the module's cost, not eventfd's. Mallocs are counted by
// malloc-interposer around the measured loops only (the child process counts its own).
//
//   swift run -c release rings-bench            # the table (about a minute)
//   swift run -c release rings-bench --quick    # fewer frames
import Foundation
import MallocInterposerSwift
import NetBackends
import Synchronization

let slots = 1024
let bufferSize = 2048
let sizes = [60, 1514]
let batches = [1, 32, 256]
let rounds = CommandLine.arguments.firstIndex(of: "--rounds").map { Int(CommandLine.arguments[$0 + 1])! } ?? 5

func framesFor(size: Int, batch: Int, quick: Bool) -> Int {
    let n = size == 60 ? (batch == 1 ? 3_000_000 : 12_000_000) : (batch == 1 ? 1_500_000 : 4_000_000)
    return quick ? n / 10 : n
}

@inline(__always) func idle(_ spins: inout Int) {
    spins += 1
    if spins & 63 == 0 { sched_yield() }
}

/// Sends `frames` copies of `frame`, publishing after each `batch` (or when the ring is full).
func produce(_ sender: NetmapRingSender, _ frame: UnsafeBufferPointer<iovec>, frames: Int, batch: Int) {
    var sent = 0
    var spins = 0
    while sent < frames {
        var n = 0
        while n < batch && sent < frames {
            guard case .queued = sender.send(frame) else { break }
            sent += 1
            n += 1
        }
        if !sender.publish() { idle(&spins) }
    }
}

/// Receives `frames` frames, releasing the slots after each `batch` (or when empty).
func consume(_ receiver: NetmapRingReceiver, _ buffer: UnsafeBufferPointer<iovec>, frames: Int, batch: Int) {
    var got = 0
    var since = 0
    var spins = 0
    while got < frames {
        switch receiver.receive(into: buffer) {
        case .frame:
            got += 1
            since += 1
            if since == batch { receiver.release(); since = 0 }
        case .empty:
            if since > 0 { receiver.release(); since = 0 }
            idle(&spins)
        case .dropped(let n, let reason):
            fatalError("dropped a \(n)-byte frame: \(reason)")
        }
    }
    receiver.release()
}

final class Buffers: @unchecked Sendable {
    let send = UnsafeMutableRawPointer.allocate(byteCount: 2048, alignment: 64)
    let receive = UnsafeMutableRawPointer.allocate(byteCount: 70000, alignment: 64)
    let sendVector = UnsafeMutablePointer<iovec>.allocate(capacity: 1)
    let receiveVector = UnsafeMutablePointer<iovec>.allocate(capacity: 1)
    init(size: Int) {
        send.initializeMemory(as: UInt8.self, repeating: 0xab, count: 2048)
        sendVector.initialize(to: iovec(iov_base: send, iov_len: size))
        receiveVector.initialize(to: iovec(iov_base: receive, iov_len: 70000))
    }
    var frame: UnsafeBufferPointer<iovec> { UnsafeBufferPointer(start: sendVector, count: 1) }
    var list: UnsafeBufferPointer<iovec> { UnsafeBufferPointer(start: receiveVector, count: 1) }
}

func makeMemory() throws -> (SharedRingMemory, NetmapInterfaceLayout) {
    let format = NetmapRingFormatter(transmitRings: 1, receiveRings: 0, slots: slots, bufferSize: bufferSize)
    let shared = try SharedRingMemory.create(name: "rings-bench", size: format.size)
    format.format(shared.memory)
    return (shared, try shared.memory.interface(at: 0))
}

struct Measured {
    var seconds: Double
    var mallocs: Int
}

let consumerDone = Atomic<Int>(0)
let consumerReady = Atomic<Int>(0)

/// Both sides on this thread, a batch at a time: the module's own cost per frame, with
/// no cache line moving between cores and no scheduling in the figure.
func runOneThread(size: Int, batch: Int, frames: Int) throws -> Measured {
    let (shared, layout) = try makeMemory()
    let sender = NetmapRingSender(layout.transmit[0])
    let receiver = NetmapRingReceiver(layout.transmit[0], role: .kernel)
    let b = Buffers(size: size), c = Buffers(size: size)
    MallocInterposerSwift.initialize()
    MallocInterposerSwift.hook()
    let start = DispatchTime.now().uptimeNanoseconds
    var moved = 0
    while moved < frames {
        var n = 0
        while n < batch, case .queued = sender.send(b.frame) { n += 1 }
        sender.publish()
        for _ in 0..<n {
            guard case .frame = receiver.receive(into: c.list) else { fatalError("lost a frame") }
        }
        receiver.release()
        moved += n
    }
    let end = DispatchTime.now().uptimeNanoseconds
    MallocInterposerSwift.unhook()
    withExtendedLifetime(shared) {}
    return Measured(seconds: Double(end - start) / 1e9, mallocs: MallocInterposerSwift.getStatistics().mallocCount)
}

/// Producer on this thread, consumer on another.
func runThreads(size: Int, batch: Int, frames: Int) throws -> Measured {
    let (shared, layout) = try makeMemory()
    let sender = NetmapRingSender(layout.transmit[0])
    let b = Buffers(size: size)
    consumerDone.store(0, ordering: .sequentiallyConsistent)
    consumerReady.store(0, ordering: .sequentiallyConsistent)
    let view = layout.transmit[0]
    let thread = Thread {
        // The consumer's objects come from its own thread's heap: allocated next to the
        // producer's, their counters would share cache lines (as they never do between
        // processes, or between a switch and its ports).
        let receiver = NetmapRingReceiver(view, role: .kernel)
        let c = Buffers(size: size)
        consumerReady.store(1, ordering: .sequentiallyConsistent)
        consume(receiver, c.list, frames: frames, batch: batch)
        consumerDone.store(1, ordering: .sequentiallyConsistent)
    }
    thread.start()
    while consumerReady.load(ordering: .sequentiallyConsistent) == 0 { sched_yield() }
    MallocInterposerSwift.initialize()
    MallocInterposerSwift.hook()
    let start = DispatchTime.now().uptimeNanoseconds
    produce(sender, b.frame, frames: frames, batch: batch)
    while consumerDone.load(ordering: .sequentiallyConsistent) == 0 { sched_yield() }
    let end = DispatchTime.now().uptimeNanoseconds
    MallocInterposerSwift.unhook()
    let mallocs = MallocInterposerSwift.getStatistics().mallocCount
    withExtendedLifetime(shared) {}
    return Measured(seconds: Double(end - start) / 1e9, mallocs: mallocs)
}

/// Producer here, consumer in a child process (this binary, `consume`), the memfd its fd 3
/// and a pipe for its malloc count its fd 4.
func runProcesses(size: Int, batch: Int, frames: Int) throws -> Measured {
    let (shared, layout) = try makeMemory()
    let sender = NetmapRingSender(layout.transmit[0])
    let b = Buffers(size: size)
    var pipeFDs: [Int32] = [0, 0]
    guard pipe(&pipeFDs) == 0 else { fatalError("pipe") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    let memHigh = fcntl(shared.fd, F_DUPFD_CLOEXEC, 100), pipeHigh = fcntl(pipeFDs[1], F_DUPFD_CLOEXEC, 100)
    posix_spawn_file_actions_adddup2(&actions, memHigh, 3)
    posix_spawn_file_actions_adddup2(&actions, pipeHigh, 4)
    let args = ["/proc/self/exe", "consume", "\(frames)", "\(batch)"]
    let argv = args.map { strdup($0) } + [nil]
    var pid: pid_t = 0
    guard posix_spawn(&pid, "/proc/self/exe", &actions, nil, argv, environ) == 0 else { fatalError("posix_spawn") }
    close(memHigh); close(pipeHigh); close(pipeFDs[1])
    // The child says it is attached and spinning with one byte.
    var byte: UInt8 = 0
    _ = read(pipeFDs[0], &byte, 1)
    MallocInterposerSwift.initialize()
    MallocInterposerSwift.hook()
    let start = DispatchTime.now().uptimeNanoseconds
    produce(sender, b.frame, frames: frames, batch: batch)
    // Done when the child has handed every slot back.
    var spins = 0
    while sender.refresh() < slots - 1 { idle(&spins) }
    let end = DispatchTime.now().uptimeNanoseconds
    MallocInterposerSwift.unhook()
    let mine = MallocInterposerSwift.getStatistics().mallocCount
    var text = [UInt8](repeating: 0, count: 64)
    let n = read(pipeFDs[0], &text, 64)
    close(pipeFDs[0])
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    let theirs = Int(String(decoding: text.prefix(max(0, n)), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    return Measured(seconds: Double(end - start) / 1e9, mallocs: theirs < 0 ? -1 : mine + theirs)
}

/// The child: consume, then report its malloc count on fd 4.
func childConsume(frames: Int, batch: Int) throws {
    let shared = try SharedRingMemory.attach(fd: 3)
    let layout = try shared.memory.interface(at: 0)
    let receiver = NetmapRingReceiver(layout.transmit[0], role: .kernel)
    let c = Buffers(size: 60)
    MallocInterposerSwift.initialize()
    MallocInterposerSwift.hook()
    var one: UInt8 = 1
    _ = write(4, &one, 1)
    consume(receiver, c.list, frames: frames, batch: batch)
    MallocInterposerSwift.unhook()
    let line = "\(MallocInterposerSwift.getStatistics().mallocCount)\n"
    _ = line.withCString { write(4, $0, strlen($0)) }
}

let args = CommandLine.arguments
if args.count >= 4 && args[1] == "consume" {
    try childConsume(frames: Int(args[2])!, batch: Int(args[3])!)
    exit(0)
}
let quick = args.contains("--quick")
print("| path | frame bytes | batch | Mpps, median of \(rounds) | ns/frame | Gbit/s | best Mpps | mallocs/frame |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for (path, run) in [("one thread (send a batch, then receive it)", runOneThread), ("two threads", runThreads), ("two processes (memfd)", runProcesses)] as [(String, (Int, Int, Int) throws -> Measured)] {
    for size in sizes {
        for batch in batches {
            let frames = framesFor(size: size, batch: batch, quick: quick)
            var results: [Measured] = []
            for _ in 0..<rounds { results.append(try run(size, batch, frames)) }
            results.sort { $0.seconds < $1.seconds }
            let median = results[rounds / 2]
            let mpps = Double(frames) / median.seconds / 1e6
            let mallocs = results.map(\.mallocs).max()!
            let perFrame = mallocs < 0 ? "?" : (mallocs == 0 ? "0" : String(format: "%.6f (%d)", Double(mallocs) / Double(frames), mallocs))
            let best = Double(frames) / results[0].seconds / 1e6
            print(String(format: "| %@ | %d | %d | %.2f | %.1f | %.2f | %.2f | %@ |", path, size, batch, mpps, median.seconds * 1e9 / Double(frames),
                         mpps * 1e6 * Double(size) * 8 / 1e9, best, perFrame))
            fflush(nil)
        }
    }
}
