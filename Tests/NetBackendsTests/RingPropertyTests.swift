import Foundation
import NetBackends
import Testing

/// Random sequences of sends, publishes, kernel transmissions, receives (into lists that
/// are sometimes too short) and releases, over random ring geometries: every frame the
/// sender queued arrives exactly once, in order and intact, or is reported dropped for a
/// reason that fits it; every frame refused at send is refused for a reason that fits it.
@Suite struct RingPropertyTests {
    @Test(arguments: Array(UInt64(1)...UInt64(24)))
    func everyFrameArrivesOnceInOrderIntactOrIsCountedDropped(seed: UInt64) throws {
        var g = SplitMix64(seed: seed)
        let slots = [8, 16, 33, 64, 256][Int.random(in: 0..<5, using: &g)]
        let bufferSize = [64, 100, 512, 2048][Int.random(in: 0..<4, using: &g)]
        let tx = TestKernelRing(slots: slots, bufferSize: bufferSize, transmit: true)
        let rx = TestKernelRing(slots: slots, bufferSize: bufferSize, transmit: false)
        let sender = NetmapRingSender(try tx.view)
        let receiver = NetmapRingReceiver(try rx.view)
        let maxSlots = min(64, slots - 1)

        var queued: [[UInt8]] = []          // queued by the sender, not yet received or dropped
        var kernelHeld: [[UInt8]] = []      // transmitted, waiting for room in the RX ring
        var received = 0, droppedNoSpace = 0, refusedNoSpace = 0, refusedTooLarge = 0
        var number = 0

        func receiveOne(capacity: Int) -> Bool {
            let list = ReceiveList(sizes: capacity > 40 ? [capacity / 3, capacity - capacity / 3] : [capacity])
            let r = list.receive(receiver)
            switch r {
            case .empty:
                return false
            case .frame(let n):
                #expect(!queued.isEmpty && queued[0].count == n && list.bytes(n) == queued[0], "seed \(seed): frame \(received) intact and in order")
                queued.removeFirst()
                received += 1
            case .dropped(let n, let reason):
                #expect(reason == .noSpace && !queued.isEmpty && queued[0].count == n && n > capacity, "seed \(seed): \(r) for a \(capacity)-byte list")
                queued.removeFirst()
                droppedNoSpace += 1
            }
            return true
        }

        func kernelMoves(limit: Int) {
            kernelHeld += tx.transmit(limit: limit)
            while let f = kernelHeld.first, rx.deliver(f) { kernelHeld.removeFirst() }
        }

        for _ in 0..<3000 {
            switch Int.random(in: 0..<100, using: &g) {
            case 0..<40:
                let length = Int.random(in: 0..<10, using: &g) == 0 ? Int.random(in: 1...65553, using: &g) : Int.random(in: 1...1600, using: &g)
                let frame = RingFrames.make(length: length, number: number)
                number += 1
                let cuts = (0..<Int.random(in: 0...4, using: &g)).map { _ in Int.random(in: 0...length, using: &g) }
                let needed = (length + bufferSize - 1) / bufferSize
                switch RingFrames.withIOVecs(frame, cuts: cuts, { sender.send($0) }) {
                case .queued(let n):
                    #expect(n == needed && n <= maxSlots)
                    queued.append(frame)
                case .noSpace:
                    #expect(needed <= maxSlots && needed > sender.freeSlots, "seed \(seed): noSpace with \(sender.freeSlots) free for \(needed)")
                    refusedNoSpace += 1
                case .tooLarge:
                    #expect(needed > maxSlots)
                    refusedTooLarge += 1
                case .peerFault:
                    Issue.record("seed \(seed): peer fault from an honest kernel")
                }
            case 40..<55:
                sender.publish()
            case 55..<70:
                kernelMoves(limit: Int.random(in: 1...8, using: &g))
            case 70..<92:
                let capacity = Int.random(in: 0..<8, using: &g) == 0 ? Int.random(in: 1...1600, using: &g) : 70000
                _ = receiveOne(capacity: capacity)
            default:
                receiver.release()
            }
        }
        // Drain: everything queued comes out.
        sender.publish()
        for _ in 0..<100_000 where !queued.isEmpty {
            kernelMoves(limit: .max)
            if !receiveOne(capacity: 70000) { receiver.release() }
        }
        #expect(queued.isEmpty && kernelHeld.isEmpty, "seed \(seed): \(queued.count) frames never arrived")
        #expect(received + droppedNoSpace + refusedNoSpace + refusedTooLarge == number)
        #expect(received > 0)
        #expect(sender.faults == NetmapPeerFaults() && receiver.faults == NetmapPeerFaults())
    }
}
