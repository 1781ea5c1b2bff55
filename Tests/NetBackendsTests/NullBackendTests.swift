import Foundation
import Glibc
import NetBackends
import Testing

/// The `null` kind: a sink that counts, and with generate=SIZE a source of valid
/// Ethernet/IPv4/UDP frames without end.
@Suite struct NullBackendTests {
    @Test func discardsAndCountsWhatItIsSent() throws {
        let loop = try NetEventLoop()
        let null = try BackendRegistry.shared.open("null", on: loop)
        defer { null.close() }
        try null.setCapabilities([.csum, .hostTSO4], vnetHeaderLength: 12)
        for n in [60, 1514, 65000] {
            #expect(try null.send([UInt8](repeating: 7, count: n)) == .sent(n))
        }
        #expect(null.statistics.frames == 3)
        #expect(null.statistics.bytes == 60 + 1514 + 65000)
        #expect(try null.receive(into: FrameBuffer()) == .empty, "without generate= nothing comes out")
    }

    @Test(arguments: [0, 10, 12])
    func generatesValidUDPFrames(headerLength: Int) throws {
        let loop = try NetEventLoop()
        let null = try BackendRegistry.shared.open("null,generate=100", on: loop)
        defer { null.close() }
        try null.setCapabilities([], vnetHeaderLength: headerLength)
        let buffer = FrameBuffer()
        for _ in 0..<3 {
            #expect(try null.receive(into: buffer) == .frame(length: headerLength + 100))
        }
        #expect(try null.peekReceiveLength() == headerLength + 100)
        let f = Array(buffer.payload(afterHeader: headerLength))
        if headerLength == 12 { #expect(buffer.header(length: 12)?.numBuffers == 1) }
        #expect(Array(f[12..<14]) == [0x08, 0x00], "IPv4 ethertype")
        #expect(f[23] == 17, "UDP")
        #expect(Int(f[16]) << 8 | Int(f[17]) == 86, "IP total length")
        var sum: UInt32 = 0
        for i in stride(from: 14, to: 34, by: 2) { sum += UInt32(f[i]) << 8 | UInt32(f[i + 1]) }
        while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
        #expect(sum == 0xffff, "the IPv4 header checksum verifies")
        #expect(Int(f[38]) << 8 | Int(f[39]) == 66, "UDP length")
    }

    @Test func tooShortOrUnknownOptionsAreBadSpecs() throws {
        for bad in ["null,generate=20", "null,generate=x", "null,size=64", "null,generate=70000"] {
            #expect(throws: NetBackendError.self, "\(bad)") { try BackendRegistry.shared.check(bad) }
        }
        try BackendRegistry.shared.check("null,generate=42")
        try BackendRegistry.shared.check("bench0,type=null,generate=1500")
    }

    /// netbe joins a generator to a sink: frames flow at once, and the stop report counts them.
    @Test func netbeConnectsAGeneratorToASink() throws {
        let netbe = try NetbeBinary.start(["connect", "null,generate=64", "null"])
        usleep(300_000)
        #expect(try netbe.stop() == 0)
        let counters = try NetbeBinary.counters(netbe.stdout)
        let frames = counters.compactMap { $0["frames"] as? Int }.max() ?? 0
        #expect(frames > 1000, "frames moved from the generator to the sink: \(counters)")
    }
}
