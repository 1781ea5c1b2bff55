import Foundation
import NetBackends
import Testing

/// Two `vxlan` backends of this library on loopback UDP sockets, driven by hand (no relay):
/// the header each writes is the one the other accepts, `peekReceiveLength` names the inner
/// frame's length, another VNI is dropped as `wrong_vni`, and with `gso=on` a run of
/// frames flushed at once arrives whole and in order.
@Suite struct VxlanSocketTests {
    static func frame(_ i: Int, size: Int = 200) -> [UInt8] {
        // To a unicast MAC from another; IPv4 ethertype; payload numbered.
        [0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1, 0x08, 0x00] + (0..<(size - 14)).map { UInt8(truncatingIfNeeded: $0 &+ i) }
    }

    static func receive(_ b: NetBackend, _ buffer: FrameBuffer) throws -> ReceiveResult {
        var r = ReceiveResult.empty
        try waitUntil(5, "a frame on \(b.name)") {
            r = try b.receive(into: buffer)
            return r != .empty
        }
        return r
    }

    @Test(arguments: ["on", "off"])
    func framesCrossAndOtherVNIsAreDropped(gro: String) throws {
        let loop = try NetEventLoop()
        let pa = try freeLoopbackPort(udp: true), pb = try freeLoopbackPort(udp: true), pc = try freeLoopbackPort(udp: true)
        let a = try BackendRegistry.shared.open("vxlan,vni=42,local=udp:127.0.0.1:\(pa),remote=udp:127.0.0.1:\(pb),gro=\(gro)", on: loop)
        let b = try BackendRegistry.shared.open("vxlan,vni=42,local=udp:127.0.0.1:\(pb),remote=udp:127.0.0.1:\(pa),gro=\(gro)", on: loop)
        let c = try BackendRegistry.shared.open("vxlan,vni=43,local=udp:127.0.0.1:\(pc),remote=udp:127.0.0.1:\(pb)", on: loop)
        defer { a.close(); b.close(); c.close() }
        let buffer = FrameBuffer()

        #expect(try a.send(Self.frame(1)) == .sent(200))
        try a.flush()
        try waitUntil(5, "a datagram to peek at") { try b.peekReceiveLength() > 0 }
        #expect(try b.peekReceiveLength() == 200)
        #expect(try Self.receive(b, buffer) == .frame(length: 200))
        #expect(Array(buffer.payload(afterHeader: 0)) == Self.frame(1))

        #expect(try c.send(Self.frame(2)) == .sent(200))
        try c.flush()
        #expect(try Self.receive(b, buffer) == .dropped(length: 200, reason: .wrongVNI))
        #expect(b.statistics.snapshot().drops[.wrongVNI] == 1)

        // A run of equal frames then a shorter one, flushed once: with UDP GSO one sendmsg.
        for i in 0..<10 {
            let f = Self.frame(i, size: 1000)
            #expect(try f.withUnsafeBytes { try a.send($0, more: true) } == .sent(1000))
        }
        #expect(try a.send(Self.frame(99, size: 300)) == .sent(300))
        try a.flush()
        for i in 0..<10 {
            #expect(try Self.receive(b, buffer) == .frame(length: 1000))
            #expect(Array(buffer.payload(afterHeader: 0)) == Self.frame(i, size: 1000))
        }
        #expect(try Self.receive(b, buffer) == .frame(length: 300))
        #expect(try b.receive(into: buffer) == .empty)
    }
}

/// `tso=on` (the default): a TSO frame handed to `vxlan` with its virtio-net header leaves
/// as the segments the kernel's TSO would make (`TCPSegmenter`'s, byte for byte: headers,
/// sequence numbers, flags, checksums), each its own datagram; a frame asking for its
/// checksum (NEEDS_CSUM) leaves with it; and with `tso=off` nothing is offered.
@Suite struct VxlanOffloadTests {
    /// A virtio-net header (12 bytes, virtio 1.2 5.1.6) for `frame`.
    static func header(gsoType: UInt8 = 0, gsoSize: Int = 0, needsCsum: (start: Int, offset: Int)? = nil) -> [UInt8] {
        func le16(_ v: Int) -> [UInt8] { [UInt8(v & 0xff), UInt8(v >> 8)] }
        return [needsCsum == nil ? 0 : 1, gsoType] + le16(0) + le16(gsoSize)
            + le16(needsCsum?.start ?? 0) + le16(needsCsum?.offset ?? 0) + le16(0)
    }

    static func pair(_ loop: NetEventLoop) throws -> (NetBackend, NetBackend) {
        let pa = try freeLoopbackPort(udp: true), pb = try freeLoopbackPort(udp: true)
        let a = try BackendRegistry.shared.open("vxlan,vni=42,local=udp:127.0.0.1:\(pa),remote=udp:127.0.0.1:\(pb)", on: loop)
        let b = try BackendRegistry.shared.open("vxlan,vni=42,local=udp:127.0.0.1:\(pb),remote=udp:127.0.0.1:\(pa),gro=off", on: loop)
        return (a, b)
    }

    @Test(arguments: [(false, 5000, 1000), (false, 4500, 1000), (true, 3001, 1440), (false, 60000, 1398)])
    func tsoFrameLeavesAsTheKernelsSegments(ipv6: Bool, payload: Int, gsoSize: Int) throws {
        let loop = try NetEventLoop()
        let (a, b) = try Self.pair(loop)
        defer { a.close(); b.close() }
        try a.setCapabilities([.csum, .hostTSO4, .hostTSO6], vnetHeaderLength: 12)
        #expect(a.vnetHeaderLength == 12)
        let superFrame = OffloadTests.segment(ipv6: ipv6, seq: 0xffff_f000, flags: TCPFrameLayout.ack | TCPFrameLayout.psh,
                                              payload: OffloadTests.payload(payload, seed: 9), options: [1, 1, 8, 10] + [UInt8](repeating: 7, count: 8))
        let expected = OffloadTests.cut(superFrame, gsoSize: gsoSize)
        #expect(expected.count == (payload + gsoSize - 1) / gsoSize)
        let type: UInt8 = ipv6 ? VirtioNetHeader.GSOType.tcpv6.rawValue : VirtioNetHeader.GSOType.tcpv4.rawValue
        let frame = Self.header(gsoType: type, gsoSize: gsoSize) + superFrame
        #expect(try frame.withUnsafeBytes { try a.send($0, more: true) } == .sent(superFrame.count))
        try a.flush()
        let buffer = FrameBuffer()
        for (i, segment) in expected.enumerated() {
            let r = try VxlanSocketTests.receive(b, buffer)
            #expect(r == .frame(length: segment.count), "segment \(i)")
            let got = Array(buffer.payload(afterHeader: 0))
            #expect(got == segment, "segment \(i) differs")
            #expect(OffloadTests.checksumsValid(got), "segment \(i) checksums")
        }
        #expect(try b.receive(into: buffer) == .empty)
        #expect(a.statistics.gsoFrames == 1 && a.statistics.softwareSegmented == 1)
    }

    /// Two remotes and a destination not learned: every remote gets every segment.
    @Test func floodedTSOFrameReachesEveryRemote() throws {
        let loop = try NetEventLoop()
        let pa = try freeLoopbackPort(udp: true), pb = try freeLoopbackPort(udp: true), pc = try freeLoopbackPort(udp: true)
        let a = try BackendRegistry.shared.open("vxlan,vni=42,local=udp:127.0.0.1:\(pa),remote=udp:127.0.0.1:\(pb),remote=udp:127.0.0.1:\(pc)", on: loop)
        let b = try BackendRegistry.shared.open("vxlan,vni=42,local=udp:127.0.0.1:\(pb),remote=udp:127.0.0.1:\(pa),gro=off", on: loop)
        let c = try BackendRegistry.shared.open("vxlan,vni=42,local=udp:127.0.0.1:\(pc),remote=udp:127.0.0.1:\(pa)", on: loop)
        defer { a.close(); b.close(); c.close() }
        try a.setCapabilities([.csum, .hostTSO4], vnetHeaderLength: 10)
        let superFrame = OffloadTests.segment(seq: 1, payload: OffloadTests.payload(9000, seed: 1))
        let expected = OffloadTests.cut(superFrame, gsoSize: 1448)
        let frame = Array(Self.header(gsoType: VirtioNetHeader.GSOType.tcpv4.rawValue, gsoSize: 1448).prefix(10)) + superFrame
        #expect(try frame.withUnsafeBytes { try a.send($0, more: true) } == .sent(superFrame.count))
        try a.flush()
        let buffer = FrameBuffer()
        for receiver in [b, c] {
            for (i, segment) in expected.enumerated() {
                #expect(try VxlanSocketTests.receive(receiver, buffer) == .frame(length: segment.count), "\(receiver.name) segment \(i)")
                #expect(Array(buffer.payload(afterHeader: 0)) == segment, "\(receiver.name) segment \(i) differs")
            }
            #expect(try receiver.receive(into: buffer) == .empty)
        }
    }

    @Test func partialChecksumIsFinished() throws {
        let loop = try NetEventLoop()
        let (a, b) = try Self.pair(loop)
        defer { a.close(); b.close() }
        try a.setCapabilities([.csum], vnetHeaderLength: 12)
        let whole = OffloadTests.segment(seq: 77, payload: OffloadTests.payload(700, seed: 3))
        // As a sender with checksum offload hands it over: the TCP checksum field holds
        // only the pseudo-header sum (virtio 1.2 5.1.6.2, csum_start/csum_offset).
        var partial = whole
        let tcpLength = whole.count - 34
        let pseudo = whole.withUnsafeBytes { InternetChecksum.pseudoHeaderSum(addresses: $0.baseAddress! + 26, addressLength: 4, protocol: 6, length: tcpLength) }
        partial[50] = UInt8(pseudo >> 8)
        partial[51] = UInt8(pseudo & 0xff)
        #expect(partial != whole)
        let frame = Self.header(needsCsum: (34, 16)) + partial
        #expect(try frame.withUnsafeBytes { try a.send($0) } == .sent(partial.count))
        try a.flush()
        let buffer = FrameBuffer()
        #expect(try VxlanSocketTests.receive(b, buffer) == .frame(length: whole.count))
        #expect(Array(buffer.payload(afterHeader: 0)) == whole)
    }

    @Test(arguments: ["on", "off"])
    func receivedFramesGetAnEmptyHeader(gro: String) throws {
        let loop = try NetEventLoop()
        let pa = try freeLoopbackPort(udp: true), pb = try freeLoopbackPort(udp: true)
        let a = try BackendRegistry.shared.open("vxlan,vni=42,local=udp:127.0.0.1:\(pa),remote=udp:127.0.0.1:\(pb)", on: loop)
        let b = try BackendRegistry.shared.open("vxlan,vni=42,local=udp:127.0.0.1:\(pb),remote=udp:127.0.0.1:\(pa),gro=\(gro)", on: loop)
        defer { a.close(); b.close() }
        try b.setCapabilities([.csum, .hostTSO4], vnetHeaderLength: 12)
        // Not zero where the header goes, so that writing it is seen.
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: FrameBuffer.defaultCapacity, alignment: 16)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0xee)
        #expect(try a.send(VxlanSocketTests.frame(5)) == .sent(200))
        try a.flush()
        try waitUntil(5, "a datagram to peek at") { try b.peekReceiveLength() > 0 }
        #expect(try b.peekReceiveLength() == 212)
        var r = ReceiveResult.empty
        try waitUntil(5, "the frame") {
            r = try b.receive(into: buffer)
            return r != .empty
        }
        #expect(r == .frame(length: 212))
        #expect(Array(buffer[0..<12]) == [UInt8](repeating: 0, count: 12))
        #expect(Array(buffer[12..<212]) == VxlanSocketTests.frame(5))
    }

    @Test func offloadsOnlyWithTSOAndGSO() throws {
        let loop = try NetEventLoop()
        for (options, offered) in [("", true), (",tso=off", false), (",gso=off", false)] {
            let p = try freeLoopbackPort(udp: true)
            let a = try BackendRegistry.shared.open("vxlan,vni=42,local=udp:127.0.0.1:\(p),remote=udp:127.0.0.1:\(p)\(options)", on: loop)
            defer { a.close() }
            #expect(a.capabilities == (offered ? [.csum, .hostTSO4, .hostTSO6] : []), "\(options)")
            #expect(a.supportedHeaderLengths == (offered ? [0, 10, 12] : [0]), "\(options)")
        }
    }
}
