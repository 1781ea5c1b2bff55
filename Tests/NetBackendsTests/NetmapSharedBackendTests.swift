import Foundation
import NetBackends
import Testing

/// The netmap backend's own frame logic (rings taken in turn, one sync per batch,
/// back-pressure when every TX ring is full, the writable handler when slots come back)
/// over rings that a peer process serves: a sealed memfd with two TX and two RX rings,
/// `netbe ring-echo` on the kernel side putting every frame back, eventfd kicks both ways.
/// This is the path the kernel's rings take too, but for the sync (ioctl vs kick).
@Suite struct NetmapSharedBackendTests {
    /// A frame whose first four bytes are its number; the rest derived from it.
    static func numbered(length: Int, number: Int) -> [UInt8] {
        var f = RingFrames.make(length: length, number: number)
        withUnsafeBytes(of: UInt32(number).littleEndian) { for i in 0..<4 { f[i] = $0[i] } }
        return f
    }

    final class State: @unchecked Sendable {
        var next = 0
        var received = Set<Int>()
        var bad: [String] = []
        var wouldBlock = 0
        var failure: String?
    }

    @Test func aPortOverSharedRingsSendsAndReceivesThroughAPeerProcess() throws {
        let format = NetmapRingFormatter(transmitRings: 2, receiveRings: 2, slots: 64, bufferSize: 2048)
        let shared = try SharedRingMemory.create(name: "netbe-port-test", size: format.size)
        format.format(shared.memory, name: "vale0:test")
        let kick = try RingKick.make(), wake = try RingKick.make()
        let count = 6000
        let helper = try SpawnedHelper([try NetbeBinary.path, "ring-echo", "--memfd", "3", "--kick", "4", "--wake", "5",
                                        "--frames", "\(count)", "--idle", "20"], fds: [shared.fd, kick.fd, wake.fd])
        let thread = try LoopThread()
        let backend = try NetmapBackend(sharedMemory: shared, kick: kick, wake: wake,
                                        spec: try BackendSpec(parsing: "vale0:test"), eventLoop: thread.loop)
        defer { backend.close() }
        #expect(backend.kind == "vale" && backend.supportedHeaderLengths == [0] && backend.capabilities.isEmpty)
        let state = State()
        let lengths = (0..<count).map { 60 + ($0 * 7919) % (2048 - 60) }
        let buffer = FrameBuffer()

        backend.setReceiveHandler {
            do {
                while case .frame(let n) = try backend.receive(into: buffer) {
                    let bytes = buffer.array
                    let number = Int(UInt32(littleEndian: bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }))
                    if number < count, n == lengths[number], bytes == Self.numbered(length: n, number: number),
                       state.received.insert(number).inserted {
                        continue
                    }
                    state.bad.append("frame of \(n) bytes numbered \(number)")
                }
            } catch {
                state.failure = "receive: \(error)"
            }
        }
        // Sends until done or back-pressure; the writable handler resumes it.
        let pump: @Sendable () -> Void = {
            do {
                while state.next < count {
                    let frame = Self.numbered(length: lengths[state.next], number: state.next)
                    let r = try frame.withUnsafeBytes { try backend.send($0, more: state.next % 16 != 15) }
                    switch r {
                    case .sent: state.next += 1
                    case .wouldBlock: state.wouldBlock += 1; try backend.flush(); return
                    case .dropped(let reason): state.failure = "frame \(state.next) dropped: \(reason)"; return
                    }
                }
                try backend.flush()
            } catch {
                state.failure = "send: \(error)"
            }
        }
        backend.setWritableHandler(pump)
        try thread.sync {
            backend.enableReceive()
            pump()
        }
        try waitUntil(60, "\(count) frames to come back") {
            let (failure, done) = try thread.sync { (state.failure, state.received.count + state.bad.count >= count) }
            if let failure { throw TestFailure(failure) }
            return done
        }
        let (bad, received, blocked, drops, faults) = try thread.sync {
            (state.bad, state.received.count, state.wouldBlock, backend.statistics.totalDrops, backend.peerFaults)
        }
        #expect(bad.isEmpty, "\(bad.prefix(5))")
        #expect(received == count, "every frame came back once, intact")
        #expect(drops == 0 && faults == NetmapPeerFaults())
        #expect(try helper.wait(seconds: 10) == 0, "ring-echo echoed every frame and exited 0")
        // Back-pressure means every TX ring was full at that moment: both carried frames.
        #expect(blocked > 0, "the sender outran the echo at least once (6000 frames, 2 x 63 slots)")
        print("netmap shared port: \(count) frames, \(blocked) times back-pressure")
    }
}
