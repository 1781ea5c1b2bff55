import ArgumentParser
import Foundation
import NetBackends

/// `netbe ring-echo` (hidden): the other process of the shared-ring tests and benchmark.
/// It attaches a sealed memfd laid out by `NetmapRingFormatter` (one TX and one RX ring),
/// plays the kernel's side of both — drains the TX ring, puts each frame back on the RX
/// ring, as a switch port looped to itself — and kicks/waits on two eventfds. Exits 0
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

    func run() throws {
        let shared = try SharedRingMemory.attach(fd: memfd)
        let layout = try shared.memory.interface(at: 0)
        guard layout.transmit.count == 1, layout.receive.count == 1 else {
            throw ValidationError("the memfd must hold one TX and one RX ring")
        }
        let drain = NetmapRingReceiver(layout.transmit[0], role: .kernel)
        let fill = NetmapRingSender(layout.receive[0], role: .kernel)
        let kicked = RingKick(fd: kick), waking = RingKick(fd: wake)
        let echoed = try RingEcho.run(drain: drain, fill: fill, frames: frames, spin: spin) { () throws(SystemCallError) -> Bool in
            try kicked.wait(milliseconds: idle * 1000)
        } published: { () throws(SystemCallError) in
            try waking.signal()
        }
        let f = drain.faults, g = fill.faults
        FileHandle.standardError.write(Data("ring-echo: \(echoed) frames, peer faults \(f.invalidIndex + g.invalidIndex) index \(f.invalidSlot + g.invalidSlot) slot\n".utf8))
        if echoed < frames { throw ExitCode(1) }
    }
}

/// The echo loop, apart so that its allocation-free path is easy to see.
enum RingEcho {
    /// Moves frames from `drain` to `fill` until `frames` went through; `idle` waits for a
    /// kick (false: timed out, stop), `published` tells the peer.
    static func run(drain: NetmapRingReceiver, fill: NetmapRingSender, frames: Int, spin: Bool,
                    idle: () throws(SystemCallError) -> Bool,
                    published: () throws(SystemCallError) -> Void) throws(SystemCallError) -> Int {
        let capacity = maximumFrameLength + 64
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
        defer { buffer.deallocate() }
        var vector = iovec(iov_base: buffer, iov_len: capacity)
        var held = 0        // length of a frame taken from `drain` that `fill` had no room for
        var echoed = 0
        var spins = 0
        while echoed < frames {
            var moved = false
            while echoed < frames {
                if held == 0 {
                    let r = withUnsafePointer(to: &vector) { drain.receive(into: UnsafeBufferPointer(start: $0, count: 1)) }
                    guard case .frame(let n) = r else {
                        if case .empty = r { break }
                        continue  // dropped: malformed from the peer; counted by the ring
                    }
                    held = n
                    moved = true
                }
                var out = iovec(iov_base: buffer, iov_len: held)
                let sent = withUnsafePointer(to: &out) { fill.send(UnsafeBufferPointer(start: $0, count: 1)) }
                if case .noSpace = sent { break }
                held = 0
                if case .queued = sent { echoed += 1 }
            }
            let gave = fill.publish()
            let took = drain.release()
            if gave || took { try published() }
            if moved || gave || took {
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
