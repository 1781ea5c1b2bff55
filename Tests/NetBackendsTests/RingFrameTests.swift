import Foundation
import NetBackends
import Testing

/// The ring module against netmap-format rings in memory, the test playing the kernel:
/// frames out through a TX ring (the kernel transmits: consumes up to `head`, moves
/// `tail`) and in through an RX ring (the kernel delivers: fills slots, moves `tail`).
@Suite struct RingFrameTests {
    static let lengths = [1, 13, 14, 59, 60, 63, 64, 65, 99, 100, 101, 1000, 1514, 2047, 2048, 2049, 4095, 4096, 4097, 9000, 64000, 65535, 65553]
    static let bufferSizes = [64, 100, 1000, 1024, 2048, 4096]

    /// Slots a frame needs at this buffer size (each slot holds up to a buffer).
    static func slotsNeeded(_ length: Int, _ bufferSize: Int) -> Int { (length + bufferSize - 1) / bufferSize }

    /// Every length over every buffer size, as one iovec and as pieces cut off the buffer
    /// boundaries: delivered intact in ceil(length/size) slots with NS_MOREFRAG on all but
    /// the last, or refused whole (`tooLarge`) past NETMAP_MAX_FRAGS (64) slots.
    @Test(arguments: bufferSizes)
    func framesGoOutThroughATransmitRing(bufferSize: Int) throws {
        let kernel = TestKernelRing(slots: 128, bufferSize: bufferSize, transmit: true)
        let sender = NetmapRingSender(try kernel.view)
        for (n, length) in Self.lengths.enumerated() {
            let frame = RingFrames.make(length: length, number: n)
            for cuts in [[], [1, length / 3, length / 2 + 7], Array(stride(from: 17, to: length, by: 333))] {
                let headBefore = kernel.head
                let outcome = RingFrames.withIOVecs(frame, cuts: cuts) { sender.send($0) }
                let needed = Self.slotsNeeded(length, bufferSize)
                if needed > 64 {
                    #expect(outcome == .tooLarge, "length \(length) at \(bufferSize)")
                    #expect(sender.publish() == false && kernel.head == headBefore)
                    continue
                }
                #expect(outcome == .queued(slots: needed), "length \(length) at \(bufferSize)")
                // Not visible before publish.
                #expect(kernel.head == headBefore)
                #expect(sender.publish())
                #expect(kernel.cur == kernel.head)
                var i = Int(headBefore)
                for k in 0..<needed {
                    let s = kernel.slot(i)
                    #expect(s.flags == (k == needed - 1 ? 0 : 0x20), "slot \(k) of \(needed) flags")
                    #expect(s.length == (k == needed - 1 ? length - bufferSize * (needed - 1) : bufferSize))
                    i = kernel.next(i)
                }
                let out = kernel.transmit()
                #expect(out.count == 1 && out.first == frame, "length \(length) at buffer size \(bufferSize), cuts \(cuts)")
            }
        }
    }

    /// Every length over every buffer size delivered by the kernel in whole buffers, into
    /// one iovec and into many small ones; more than 64 fragments is malformed, consumed.
    @Test(arguments: bufferSizes)
    func framesComeInThroughAReceiveRing(bufferSize: Int) throws {
        let kernel = TestKernelRing(slots: 128, bufferSize: bufferSize, transmit: false)
        let receiver = NetmapRingReceiver(try kernel.view)
        let whole = ReceiveList(capacity: 70000)
        let pieces = ReceiveList(sizes: [7, 1, 4000, 33] + Array(repeating: 997, count: 70))
        for (n, length) in Self.lengths.enumerated() {
            let frame = RingFrames.make(length: length, number: n)
            // The kernel itself cannot place more than the ring's 127 free slots.
            guard Self.slotsNeeded(length, bufferSize) <= 127 else { continue }
            for list in [whole, pieces] {
                #expect(kernel.deliver(frame))
                let r = list.receive(receiver)
                if Self.slotsNeeded(length, bufferSize) > 64 {
                    #expect(r == .dropped(length: min(length, 64 * bufferSize), reason: .malformed))
                    // The rest of the over-long frame is skipped, never taken for a frame.
                    #expect(list.receive(receiver) == .empty)
                } else {
                    #expect(r == .frame(length: length), "length \(length) at \(bufferSize)")
                    #expect(list.bytes(length) == frame, "length \(length) at \(bufferSize)")
                    #expect(list.receive(receiver) == .empty)
                }
                #expect(receiver.release())
                #expect(kernel.head == kernel.tail && kernel.cur == kernel.head, "every slot handed back")
            }
        }
    }

    /// Fragments the kernel cuts shorter than a buffer (as a NIC with small descriptors
    /// does), and frames ending exactly on, one before and one after a buffer boundary.
    @Test func fragmentEdgesOnAndOffBufferBoundaries() throws {
        let kernel = TestKernelRing(slots: 64, bufferSize: 256, transmit: false)
        let receiver = NetmapRingReceiver(try kernel.view)
        let list = ReceiveList(sizes: [10, 246, 256, 1, 255, 4096])
        var number = 0
        for k in 1...8 {
            for length in [256 * k - 1, 256 * k, 256 * k + 1] {
                for fragment in [256, 255, 10, 1] where (length + fragment - 1) / fragment <= 63 {
                    number += 1
                    let frame = RingFrames.make(length: length, number: number)
                    #expect(kernel.deliver(frame, fragment: fragment))
                    #expect(list.receive(receiver) == .frame(length: length), "length \(length) in \(fragment)-byte fragments")
                    #expect(list.bytes(length) == frame)
                    receiver.release()
                }
            }
        }
        // Sending: a frame whose iovecs end exactly on buffer boundaries fills whole slots.
        let tx = TestKernelRing(slots: 16, bufferSize: 256, transmit: true)
        let sender = NetmapRingSender(try tx.view)
        let frame = RingFrames.make(length: 768, number: 99)
        #expect(RingFrames.withIOVecs(frame, cuts: [256, 512]) { sender.send($0) } == .queued(slots: 3))
        #expect(RingFrames.withIOVecs(frame, cuts: [255, 257, 511, 513]) { sender.send($0) } == .queued(slots: 3))
        sender.publish()
        #expect(tx.transmit() == [frame, frame])
    }

    /// A TX ring that fills in the middle of a frame: the frame is refused whole
    /// (`noSpace`), nothing of it is published, the frames before it leave intact, and
    /// once the kernel frees slots the same frame goes.
    @Test func aRingFillingMidFrameDropsThatFrameWhole() throws {
        let kernel = TestKernelRing(slots: 8, bufferSize: 64, transmit: true)
        let sender = NetmapRingSender(try kernel.view)
        let frames = (0..<3).map { RingFrames.make(length: 150, number: $0) }  // 3 slots each
        #expect(sender.freeSlots == 7)
        #expect(RingFrames.withIOVecs(frames[0]) { sender.send($0) } == .queued(slots: 3))
        #expect(RingFrames.withIOVecs(frames[1]) { sender.send($0) } == .queued(slots: 3))
        // One slot left: the third frame would run out in its middle, and is refused whole.
        #expect(RingFrames.withIOVecs(frames[2]) { sender.send($0) } == .noSpace)
        #expect(sender.publish())
        #expect(kernel.head == 6, "head moved past the two whole frames only")
        #expect(kernel.slot(6).length == 0 && kernel.slot(6).flags == 0, "no slot of the refused frame was touched")
        #expect(kernel.transmit() == [frames[0], frames[1]])
        // The kernel handed the slots back: the refused frame now fits, across the wrap.
        #expect(RingFrames.withIOVecs(frames[2]) { sender.send($0) } == .queued(slots: 3))
        sender.publish()
        #expect(kernel.head == 1)
        #expect(kernel.transmit() == [frames[2]])
        // A frame larger than the whole ring can never fit.
        #expect(RingFrames.withIOVecs(RingFrames.make(length: 64 * 8, number: 5)) { sender.send($0) } == .tooLarge)
    }

    /// A receive list one byte short of the frame: dropped whole with `.noSpace`, its slots
    /// consumed and handed back, and the next frame arrives intact.
    @Test func aReceiveListOneByteShortDropsTheFrameAndReleasesItsSlots() throws {
        let kernel = TestKernelRing(slots: 32, bufferSize: 128, transmit: false)
        let receiver = NetmapRingReceiver(try kernel.view)
        let big = RingFrames.make(length: 1000, number: 1)
        let next = RingFrames.make(length: 60, number: 2)
        #expect(kernel.deliver(big) && kernel.deliver(next))
        #expect(receiver.peekLength() == 1000)
        let short = ReceiveList(sizes: [500, 499])
        #expect(short.receive(receiver) == .dropped(length: 1000, reason: .noSpace))
        #expect(receiver.release())
        #expect(kernel.head == 8, "the dropped frame's 8 slots went back to the kernel")
        #expect(short.receive(receiver) == .frame(length: 60))
        #expect(short.bytes(60) == next)
        // Exactly the frame's size fits.
        #expect(kernel.deliver(big))
        let exact = ReceiveList(sizes: [500, 500])
        #expect(exact.receive(receiver) == .frame(length: 1000))
        #expect(exact.bytes(1000) == big)
    }

    /// Indices wrap around many times with frames straddling the last slot, both ways.
    @Test func indicesWrapAround() throws {
        let tx = TestKernelRing(slots: 16, bufferSize: 64, transmit: true)
        let rx = TestKernelRing(slots: 16, bufferSize: 64, transmit: false)
        let sender = NetmapRingSender(try tx.view)
        let receiver = NetmapRingReceiver(try rx.view)
        let list = ReceiveList(capacity: 4096)
        var g = SplitMix64(seed: 42)
        for n in 0..<2000 {
            let frame = RingFrames.make(length: Int.random(in: 1...(64 * 5), using: &g), number: n)
            #expect(RingFrames.withIOVecs(frame, cuts: [Int.random(in: 0...frame.count, using: &g)]) { sender.send($0) } != .noSpace)
            sender.publish()
            let out = tx.transmit()
            #expect(out == [frame])
            #expect(rx.deliver(out[0]))
            #expect(list.receive(receiver) == .frame(length: frame.count))
            #expect(list.bytes(frame.count) == frame)
            receiver.release()
        }
        #expect(rx.head == rx.tail)
    }

    /// A virtio-net header of 0, 10 or 12 bytes travels in front of the frame in the same
    /// slots (as a VALE port with PORT_HDR_SET carries it), given and taken as its own iovec.
    @Test(arguments: [0, 10, 12])
    func headerLengths(length: Int) throws {
        let tx = TestKernelRing(slots: 16, bufferSize: 2048, transmit: true)
        let rx = TestKernelRing(slots: 16, bufferSize: 2048, transmit: false)
        let sender = NetmapRingSender(try tx.view)
        let receiver = NetmapRingReceiver(try rx.view)
        var header = [UInt8](repeating: 0, count: length)
        if length > 0 { header[0] = 1; header[length - 1] = 0x5a }  // NEEDS_CSUM, a marked last byte
        let payload = RingFrames.make(length: 1514, number: length)
        let frame = header + payload
        #expect(RingFrames.withIOVecs(frame, cuts: [length]) { sender.send($0) } == .queued(slots: 1))
        sender.publish()
        let out = tx.transmit()
        #expect(out == [frame])
        #expect(rx.deliver(out[0], fragment: 1000))
        let list = ReceiveList(sizes: length > 0 ? [length, 9000] : [9000])
        #expect(list.receive(receiver) == .frame(length: frame.count))
        #expect(list.bytes(frame.count) == frame)
    }
}
