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
