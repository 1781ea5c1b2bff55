import Foundation
import NetBackends
import Testing

/// A tap opened by the library in a namespace the test made; the test plays the VM:
/// it crafts frames and the kernel on the other side answers them. No event loop runs
/// here, so the test thread is the backend's only caller (the contract's loop thread).
@Suite struct TapKernelTests {
    /// How the frontend (this test) talks to the tap.
    struct Setup: CustomTestStringConvertible, Sendable {
        var options: String
        var headerLength: Int
        var testDescription: String { "tap0\(options), frontend header \(headerLength)" }
    }

    static let setups = [
        Setup(options: "", headerLength: 0),            // vnet header on the fd, hidden by the backend
        Setup(options: "", headerLength: 12),
        Setup(options: "", headerLength: 10),
        Setup(options: ",vnet=off", headerLength: 0),   // no header anywhere
    ]

    typealias Fixture = TapFixture
    static let ourMAC = TapFixture.ourMAC
    static let ourIP = TapFixture.ourIP
    static let kernelIP = TapFixture.kernelIP

    // MARK: the kernel answers

    @Test(arguments: setups)
    func kernelAnswersARP(_ setup: Setup) throws {
        let f = try Fixture(options: setup.options, headerLength: setup.headerLength)
        #expect(try f.send(f.arpRequest()) == .sent(f.headerLength + 42))
        let reply = try f.receive("ARP reply") { $0.isARPReply }
        #expect(reply.destinationMAC == Self.ourMAC)
        #expect(reply.sourceMAC == f.tapMAC)
        #expect(reply.arpSenderMAC == f.tapMAC)
        #expect(reply.arpSenderIP == Self.kernelIP)
        #expect(reply.arpTargetMAC == Self.ourMAC)
        #expect(reply.arpTargetIP == Self.ourIP)
    }

    @Test(arguments: setups)
    func kernelAnswersICMPEcho(_ setup: Setup) throws {
        let f = try Fixture(options: setup.options, headerLength: setup.headerLength)
        try f.addStaticNeighbour()
        let data = (0..<56).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        for seq: UInt16 in 1...3 {
            let echo = Frames.icmpEchoRequest(id: 0x4e42, sequence: seq, data)
            let ip = Frames.ipv4(src: Self.ourIP, dst: Self.kernelIP, proto: Frames.protoICMP, id: seq, echo)
            #expect(try f.send(Frames.ethernet(dst: f.tapMAC, src: Self.ourMAC, type: Frames.typeIPv4, ip)) == .sent(f.headerLength + 14 + ip.count))
            let reply = try f.receive("echo reply \(seq)") { $0.isIPv4 && $0.ipProtocol == Frames.protoICMP && $0.icmpType == 0 }
            #expect(reply.destinationMAC == Self.ourMAC && reply.sourceMAC == f.tapMAC)
            #expect(reply.ipSource == Self.kernelIP && reply.ipDestination == Self.ourIP)
            #expect(reply.ipHeaderChecksumValid)
            #expect(reply.icmpChecksumValid)
            #expect(reply.icmpID == 0x4e42)
            #expect(reply.icmpSequence == seq)
            #expect(reply.icmpData == data)
        }
    }

    @Test(arguments: setups)
    func kernelAnswersTCPSYNWithSYNACK(_ setup: Setup) throws {
        try requireDebianPython()
        let f = try Fixture(options: setup.options, headerLength: setup.headerLength)
        try f.addStaticNeighbour()
        let port: UInt16 = 5001
        let listener = try f.ns.spawn([debianPython, "-c", """
            import socket, time
            s = socket.socket()
            s.bind(("10.66.0.1", \(port)))
            s.listen()
            print("listening", flush=True)
            time.sleep(60)
            """])
        try listener.waitForLine("listening")
        let isn: UInt32 = 0x1234_5678
        let syn = Frames.tcpSYN(src: Self.ourIP, dst: Self.kernelIP, sourcePort: 40001, destinationPort: port, sequence: isn)
        let ip = Frames.ipv4(src: Self.ourIP, dst: Self.kernelIP, proto: Frames.protoTCP, id: 1, syn)
        #expect(try f.send(Frames.ethernet(dst: f.tapMAC, src: Self.ourMAC, type: Frames.typeIPv4, ip)) == .sent(f.headerLength + 14 + ip.count))
        let reply = try f.receive("SYN-ACK") { $0.isIPv4 && $0.ipProtocol == Frames.protoTCP && $0.tcpDestinationPort == 40001 }
        #expect(reply.ipSource == Self.kernelIP && reply.ipDestination == Self.ourIP)
        #expect(reply.tcpSourcePort == port)
        #expect(reply.tcpFlags & 0x3f == 0x12, "flags \(String(reply.tcpFlags, radix: 16)): want SYN|ACK")
        #expect(reply.tcpAcknowledgment == isn &+ 1)
        #expect(reply.ipHeaderChecksumValid)
        #expect(reply.tcpChecksumValid)
    }

    // MARK: receive semantics

    @Test func receiveIsEmptyWhenNothingWaits() throws {
        let f = try Fixture()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 8)
        defer { buffer.deallocate() }
        #expect(try f.tap.receive(into: buffer) == .empty)
        #expect(try f.tap.peekReceiveLength() == 0)
        #expect(try f.tap.discardReceived() == .empty)
    }

    @Test(arguments: [0, 12])
    func peekGivesTheNextFrameWhichReceiveThenReturns(headerLength: Int) throws {
        let f = try Fixture(headerLength: headerLength)
        #expect(try f.send(f.arpRequest()) == .sent(f.headerLength + 42))
        let peeked = try f.waitQueued()
        #expect(peeked == headerLength + 42, "an ARP reply is 42 bytes plus the frontend header")
        #expect(try f.tap.peekReceiveLength() == peeked, "peeking twice must not consume")
        let reply = try f.receive("the peeked frame") { _ in true }
        #expect(reply.bytes.count + headerLength == peeked)
        #expect(reply.isARPReply)
        #expect(try f.tap.peekReceiveLength() == 0)
    }

    @Test(arguments: [0, 12])
    func shortBufferListDropsTheWholeFrameAndTheNextStillArrives(headerLength: Int) throws {
        let f = try Fixture(headerLength: headerLength)
        // Two requests, so two replies wait on the tap.
        for _ in 0..<2 { #expect(try f.send(f.arpRequest()) == .sent(f.headerLength + 42)) }
        _ = try f.waitQueued()
        usleep(100_000)
        let small = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 8)
        defer { small.deallocate() }
        // Scatter list of 8 + 8 bytes: shorter than any frame.
        let shortList = [iovec(iov_base: small, iov_len: 8), iovec(iov_base: small + 8, iov_len: 8)]
        let r = try shortList.withUnsafeBufferPointer { try f.tap.receive(into: $0) }
        #expect(r == .dropped(length: headerLength + 42, reason: .noSpace))
        #expect(f.tap.statistics.drops(.noSpace) == 1)
        // The slot was released: the second reply comes next, whole, across three buffers.
        let parts = (0..<3).map { _ in UnsafeMutableRawPointer.allocate(byteCount: 30, alignment: 8) }
        defer { parts.forEach { $0.deallocate() } }
        let list = parts.map { iovec(iov_base: $0, iov_len: 30) }
        let next = try list.withUnsafeBufferPointer { try f.tap.receive(into: $0) }
        #expect(next == .frame(length: headerLength + 42))
        var joined: [UInt8] = []
        for p in parts { joined += UnsafeRawBufferPointer(start: p, count: 30) }
        let frame = Frames.Parsed(bytes: Array(joined[headerLength..<(headerLength + 42)]))
        #expect(frame.isARPReply && frame.arpTargetIP == Self.ourIP)
        #expect(try list.withUnsafeBufferPointer { try f.tap.receive(into: $0) } == .empty)
    }

    // MARK: link state and lifetime

    @Test func sendOnADownTapIsACountedDropNotAnError() throws {
        let f = try Fixture()
        try sh("ip", "-n", f.ns.name, "link", "set", "tap0", "down")
        #expect(try f.send(f.arpRequest()) == .dropped(.linkDown))
        #expect(try f.send(f.arpRequest()) == .dropped(.linkDown))
        #expect(f.tap.statistics.drops(.linkDown) == 2)
        // Up again: frames flow again.
        try sh("ip", "-n", f.ns.name, "link", "set", "tap0", "up")
        #expect(try f.send(f.arpRequest()) == .sent(f.headerLength + 42))
        _ = try f.receive("ARP reply after link up") { $0.isARPReply }
    }

    @Test func persistentTapIsAttachedAndSurvivesClose() throws {
        let ns = try TestNamespace("persist")
        try sh("ip", "-n", ns.name, "tuntap", "add", "dev", "tapP", "mode", "tap")
        let loop = try NetEventLoop()
        let tap = try BackendRegistry.shared.open("tapP,netns=\(ns.name)", on: loop)
        #expect((tap as? TapBackend)?.attachedToExisting == true)
        #expect(tap.kind == "tap")
        try ns.waitCarrier("tapP")
        tap.close()
        tap.close()   // idempotent
        let shown = try sh("ip", "-n", ns.name, "link", "show", "tapP")
        #expect(shown.contains("tapP"), "the persistent tap went away with our descriptor")

        // A tap the library created goes away with its descriptor.
        let own = try BackendRegistry.shared.open("tap0,netns=\(ns.name)", on: loop)
        #expect((own as? TapBackend)?.attachedToExisting == false)
        own.close()
        try waitUntil(2, "the library's own tap to vanish") {
            (try sh(["ip", "-n", ns.name, "link", "show", "tap0"], allowFailure: true)).isEmpty
        }
    }

    @Test func specOptionsShapeTheInterface() throws {
        let ns = try TestNamespace("opts")
        let loop = try NetEventLoop()
        let tap = try BackendRegistry.shared.open("tap0,netns=\(ns.name),mtu=9000,mac=02:12:34:56:78:9a,up=off", on: loop)
        defer { tap.close() }
        let data = Data(try sh("ip", "-n", ns.name, "-j", "link", "show", "tap0").utf8)
        let link = try #require((try JSONSerialization.jsonObject(with: data) as? [[String: Any]])?.first)
        #expect(link["mtu"] as? Int == 9000)
        #expect(link["address"] as? String == "02:12:34:56:78:9a")
        #expect((link["flags"] as? [String])?.contains("UP") == false, "up=off left the link up: \(link)")

        let upByDefault = try BackendRegistry.shared.open("tap1,netns=\(ns.name)", on: loop)
        defer { upByDefault.close() }
        #expect(try sh("ip", "-n", ns.name, "link", "show", "tap1").contains(",UP"))
    }
}
