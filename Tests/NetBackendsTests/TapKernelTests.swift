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

    static let ourMAC: [UInt8] = [0x02, 0x00, 0x00, 0x5e, 0x00, 0x02]
    static let ourIP: [UInt8] = [10, 66, 0, 2]
    static let kernelIP: [UInt8] = [10, 66, 0, 1]

    /// A namespace with the library's tap0 in it, the kernel at 10.66.0.1/24 on it.
    final class Fixture {
        let ns: TestNamespace
        let loop: EventLoop
        let tap: NetBackend
        let headerLength: Int
        let tapMAC: [UInt8]
        private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 70_000, alignment: 16)

        init(_ setup: Setup = Setup(options: "", headerLength: 0), device: String = "tap0") throws {
            ns = try TestNamespace("tapk")
            // Without IPv6 the kernel sends nothing unasked (no router solicitations, no MLD).
            try ns.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
            loop = try EventLoop()
            tap = try BackendRegistry.shared.open("\(device),netns=\(ns.name)\(setup.options)", on: loop)
            headerLength = setup.headerLength
            try tap.setCapabilities([], vnetHeaderLength: headerLength)
            try ns.address(device, "10.66.0.1/24")
            let brief = try sh("ip", "-n", ns.name, "-br", "link", "show", device)
            let fields = brief.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 3, let mac = parseMAC(String(fields[2])) else { throw TestFailure("no MAC in: \(brief)") }
            tapMAC = mac
        }

        deinit {
            tap.close()
            buffer.deallocate()
            ns.delete()
        }

        /// Sends `frame` with a zeroed header of the frontend's length in front; `.sent`
        /// counts what the frontend handed over, header included (as the seed's writev).
        func send(_ frame: [UInt8]) throws -> SendResult {
            let bytes = [UInt8](repeating: 0, count: headerLength) + frame
            return try bytes.withUnsafeBytes { try tap.send($0) }
        }

        /// Receives until a frame satisfies `match` (others are skipped), checking that a
        /// frontend header says neither GSO nor NEEDS_CSUM (no offload was accepted).
        func receive(seconds: Double = 3, _ what: String, _ match: (Frames.Parsed) -> Bool) throws -> Frames.Parsed {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                switch try tap.receive(into: buffer) {
                case .empty:
                    usleep(1000)
                case .dropped(let length, let reason):
                    throw TestFailure("a \(length)-byte frame was dropped (\(reason)) into a \(buffer.count)-byte buffer")
                case .frame(let length):
                    let parsed = try strip(length)
                    if match(parsed) { return parsed }
                }
            }
            throw TestFailure("no \(what) within \(seconds) s")
        }

        /// The frame after the frontend header, with the header checked.
        func strip(_ length: Int) throws -> Frames.Parsed {
            guard length >= headerLength + 14 else { throw TestFailure("a \(length)-byte frame is too short") }
            if headerLength > 0 {
                let h = try #require(VirtioNetHeader(decoding: UnsafeRawBufferPointer(rebasing: buffer[0..<headerLength])))
                #expect(!h.isGSO, "GSO frame without GUEST_TSO accepted")
                #expect(!h.flags.contains(.needsCsum), "NEEDS_CSUM without GUEST_CSUM accepted")
            }
            return Frames.Parsed(bytes: Array(buffer[headerLength..<length]))
        }

        func arpRequest() -> [UInt8] {
            Frames.arpRequest(senderMAC: ourMAC, senderIP: ourIP, targetIP: kernelIP)
        }

        /// Lets the kernel reach our address without asking (IP tests should not depend on ARP).
        func addStaticNeighbour() throws {
            try sh("ip", "-n", ns.name, "neigh", "replace", "10.66.0.2", "lladdr", "02:00:00:5e:00:02", "dev", "tap0")
        }

        /// Waits until a frame is queued on the tap; returns its length as peeked.
        func waitQueued() throws -> Int {
            var length = 0
            try waitUntil(3, "a frame on the tap") {
                length = try tap.peekReceiveLength()
                return length > 0
            }
            return length
        }
    }

    // MARK: the kernel answers

    @Test(arguments: setups)
    func kernelAnswersARP(_ setup: Setup) throws {
        let f = try Fixture(setup)
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
        let f = try Fixture(setup)
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
        let f = try Fixture(setup)
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
        let f = try Fixture(Setup(options: "", headerLength: headerLength))
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
        let f = try Fixture(Setup(options: "", headerLength: headerLength))
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
        let loop = try EventLoop()
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
}
