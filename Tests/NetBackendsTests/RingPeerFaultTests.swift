import Foundation
import NetBackends
import Testing

/// A peer that writes garbage into the shared ring: every bad index and slot is counted
/// and ignored, never followed. The rings live in guarded memory, so a single read or
/// write outside it would kill the test process instead of passing unnoticed.
@Suite struct RingPeerFaultTests {
    /// `tail` beyond the ring, moving backwards, or handing over the slot the kernel must
    /// keep: ignored (the last good value stays), counted, and later good values work.
    @Test func outOfRangeTailIsCountedAndIgnored() throws {
        let kernel = TestKernelRing(slots: 16, bufferSize: 64, transmit: false)
        let receiver = NetmapRingReceiver(try kernel.view)
        let list = ReceiveList(capacity: 2048)
        for bad: UInt32 in [16, 17, 0xFFFF_FFFF, 1 << 31] {
            kernel.tail = bad
            #expect(list.receive(receiver) == .empty)
        }
        #expect(receiver.faults.invalidIndex == 4)
        kernel.tail = 0
        #expect(kernel.deliver(RingFrames.make(length: 60, number: 1)))
        #expect(kernel.deliver(RingFrames.make(length: 60, number: 2)))
        #expect(list.receive(receiver) == .frame(length: 60))
        // Backwards: tail 2 -> 1.
        kernel.tail = 1
        #expect(receiver.refresh() == 1, "the earlier tail (2) stands")
        #expect(receiver.faults.invalidIndex == 5)
        kernel.tail = 2
        #expect(list.receive(receiver) == .frame(length: 60))
        #expect(list.bytes(60) == RingFrames.make(length: 60, number: 2))
    }

    /// A TX ring whose kernel moves `tail` out of range, or hands over a slot whose buffer
    /// index lies outside the memory: the frame is refused (`peerFault`), counted, nothing
    /// is written outside the memory.
    @Test func transmitSlotsWithBadBuffersAreRefused() throws {
        let kernel = TestKernelRing(slots: 8, bufferSize: 64, transmit: true)
        let sender = NetmapRingSender(try kernel.view)
        kernel.tail = 99
        #expect(sender.refresh() == 7)
        #expect(sender.faults.invalidIndex == 1)
        kernel.tail = 7
        for bad: UInt32 in [8, 9, 0xFFFF_FFFF] {
            kernel.setSlot(0, buffer: bad, length: 0, flags: 0)
            #expect(RingFrames.withIOVecs(RingFrames.make(length: 60, number: 0)) { sender.send($0) } == .peerFault)
        }
        #expect(sender.faults.invalidSlot == 3)
        #expect(sender.publish() == false, "nothing was queued")
        kernel.setSlot(0, buffer: 7, length: 0, flags: 0)
        let frame = RingFrames.make(length: 60, number: 1)
        #expect(RingFrames.withIOVecs(frame) { sender.send($0) } == .queued(slots: 1))
        sender.publish()
        #expect(kernel.transmit() == [frame])
    }

    /// RX slots naming a buffer outside the memory, or longer than a buffer (up to 65535):
    /// the frame is dropped `malformed`, its slots consumed, nothing read outside.
    @Test(arguments: [(UInt32(16), 60), (UInt32.max, 60), (UInt32(3), 65), (UInt32(3), 65535)])
    func receiveSlotsWithBadBuffersOrLengthsAreMalformed(buffer: UInt32, length: Int) throws {
        let kernel = TestKernelRing(slots: 16, bufferSize: 64, transmit: false)
        let receiver = NetmapRingReceiver(try kernel.view)
        let list = ReceiveList(capacity: 70000)
        // A three-slot frame whose middle slot is bad, then a good frame.
        let frame = RingFrames.make(length: 150, number: 1)
        #expect(kernel.deliver(frame))
        let middle = kernel.slot(1)
        kernel.setSlot(1, buffer: buffer, length: length, flags: middle.flags)
        let good = RingFrames.make(length: 80, number: 2)
        #expect(kernel.deliver(good))
        if case .dropped(_, let reason) = list.receive(receiver) {
            #expect(reason == .malformed)
        } else {
            Issue.record("a frame with a bad slot was not dropped")
        }
        #expect(receiver.faults.invalidSlot == 1)
        #expect(list.receive(receiver) == .frame(length: 80))
        #expect(list.bytes(80) == good)
    }

    /// The same for a frame of one slot (the receiver's short path) and a zero length.
    @Test(arguments: [(UInt32(16), 30), (UInt32.max, 30), (UInt32(3), 65), (UInt32(3), 0)])
    func oneSlotFramesWithBadBuffersOrLengthsAreMalformed(buffer: UInt32, length: Int) throws {
        let kernel = TestKernelRing(slots: 16, bufferSize: 64, transmit: false)
        let receiver = NetmapRingReceiver(try kernel.view)
        let list = ReceiveList(capacity: 70000)
        #expect(kernel.deliver(RingFrames.make(length: 30, number: 1)))
        kernel.setSlot(0, buffer: buffer, length: length, flags: 0)
        #expect(list.receive(receiver) == .dropped(length: length, reason: .malformed))
        #expect(receiver.faults.invalidSlot == (length == 0 ? 0 : 1))
        #expect(kernel.deliver(RingFrames.make(length: 30, number: 2)))
        #expect(list.receive(receiver) == .frame(length: 30))
    }

    /// NS_MOREFRAG on every slot the kernel ever hands over: the frame cannot end, so it
    /// is dropped `malformed` once the ring is full of it (after the consumed slots went
    /// back), and frames after it still arrive. More than 64 fragments: malformed too.
    @Test func framesThatNeverEndOrHaveTooManyFragments() throws {
        let kernel = TestKernelRing(slots: 16, bufferSize: 64, transmit: false)
        let receiver = NetmapRingReceiver(try kernel.view)
        let list = ReceiveList(capacity: 70000)
        for i in 0..<15 {
            let s = kernel.slot(i)
            kernel.setSlot(i, buffer: s.buffer, length: 64, flags: 0x20)
        }
        kernel.tail = 15
        #expect(receiver.peekLength() == 0)
        #expect(list.receive(receiver) == .dropped(length: 15 * 64, reason: .malformed))
        receiver.release()
        #expect(kernel.head == 15)
        // Its end, when it comes, is skipped; then a real frame.
        let s15 = kernel.slot(15)
        kernel.setSlot(15, buffer: s15.buffer, length: 10, flags: 0)
        kernel.tail = 0
        #expect(kernel.deliver(RingFrames.make(length: 70, number: 3)))
        #expect(list.receive(receiver) == .frame(length: 70))
        #expect(list.bytes(70) == RingFrames.make(length: 70, number: 3))

        // 65 fragments of one byte in a bigger ring.
        let big = TestKernelRing(slots: 256, bufferSize: 64, transmit: false)
        let r2 = NetmapRingReceiver(try big.view)
        #expect(big.deliver(RingFrames.make(length: 65, number: 4), fragment: 1))
        #expect(big.deliver(RingFrames.make(length: 64, number: 5), fragment: 1))
        #expect(list.receive(r2) == .dropped(length: 64, reason: .malformed))
        #expect(list.receive(r2) == .frame(length: 64), "64 fragments are allowed")
        #expect(list.bytes(64) == RingFrames.make(length: 64, number: 5))
        r2.release()
        #expect(big.head == big.tail)
    }

    /// The kernel side of a ring in shared memory (a switch draining a port's TX ring):
    /// a user that moves `head` past `tail` or out of range is counted and ignored.
    @Test func kernelSideIgnoresAHeadBeyondItsSlots() throws {
        let ring = TestKernelRing(slots: 8, bufferSize: 64, transmit: true)
        let drain = NetmapRingReceiver(try ring.view, role: .kernel)
        let list = ReceiveList(capacity: 2048)
        ring.head = 8
        #expect(list.receive(drain) == .empty)
        // Past the kernel's tail (7): head may reach 7 at most.
        ring.head = 7
        #expect(drain.refresh() == 7)
        ring.head = 0  // backwards over the whole ring
        #expect(drain.refresh() == 7)
        #expect(drain.faults.invalidIndex == 2)
    }
}
