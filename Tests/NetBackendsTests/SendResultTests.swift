import CNetBackends
import Foundation
import NetBackends
import Testing

/// `SendResult.sent(n)` means the same for every kind: `n` is the length of the frame as
/// the caller handed it over, its virtio-net header included (`vnetHeaderLength` bytes,
/// 0 when the caller handles the header itself), whatever the backend puts on the wire
/// (a tap's hidden header, a stream's length prefix, the helper link's 12-byte header).
@Suite(.serialized) struct SendResultTests {
    static let frame: [UInt8] = OffloadTests.segment(seq: 1, payload: OffloadTests.payload(300, seed: 4))

    /// Sends `frame` behind a zeroed header of the backend's length; returns (result, length handed over).
    static func sendOne(_ backend: NetBackend) throws -> (SendResult, Int) {
        let bytes = [UInt8](repeating: 0, count: backend.vnetHeaderLength) + frame
        return (try bytes.withUnsafeBytes { try backend.send($0) }, bytes.count)
    }

    @Test(arguments: [0, 10, 12]) func tap(headerLength: Int) throws {
        let ns = try TestNamespace("sent")
        let loop = try NetEventLoop()
        let tap = try BackendRegistry.shared.open("tap0,netns=\(ns.name)", on: loop)
        defer { tap.close() }
        try tap.setCapabilities([], vnetHeaderLength: headerLength)
        let (r, handed) = try Self.sendOne(tap)
        #expect(r == .sent(handed), "tap, header \(headerLength): \(r) for \(handed) bytes handed over")
    }

    @Test(arguments: [false, true]) func stream(vnet: Bool) throws {
        let path = TestSocketPath("sent")
        let listener = socket(AF_UNIX, cnb_SOCK_STREAM, 0)
        defer { close(listener) }
        var a = RawDgramClient.address(path.path)
        let bound = withUnsafePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        #expect(bound == 0 && listen(listener, 1) == 0)
        let loop = try NetEventLoop()
        let s = try BackendRegistry.shared.open("stream,connect=unix:\(path.path),vnet=\(vnet ? "on" : "off")", on: loop)
        defer { s.close() }
        try s.setCapabilities([], vnetHeaderLength: vnet ? 12 : 0)
        let (r, handed) = try Self.sendOne(s)
        #expect(r == .sent(handed), "stream vnet=\(vnet): \(r) for \(handed) bytes handed over")
    }

    @Test func dgram() throws {
        let mine = TestSocketPath("sent-netbe"), peer = TestSocketPath("sent-peer")
        let client = try RawDgramClient(boundAt: peer.path)
        let loop = try NetEventLoop()
        let d = try BackendRegistry.shared.open("dgram,local=unix:\(mine.path),remote=unix:\(peer.path)", on: loop)
        defer { d.close() }
        let (r, handed) = try Self.sendOne(d)
        #expect(r == .sent(handed), "dgram: \(r) for \(handed) bytes handed over")
        #expect(client.receive()?.count == handed)
    }

    @Test(arguments: ["off", "on"], [0, 10, 12]) func slirp(helper: String, headerLength: Int) throws {
        // In this process the helper is netbe's hidden subcommand, not the test binary.
        if helper == "on" { SlirpHelperBackend.executable = try NetbeBinary.path }
        let loop = try NetEventLoop()
        let s = try BackendRegistry.shared.open("slirp,helper=\(helper)", on: loop)
        defer { s.close() }
        try s.setCapabilities([], vnetHeaderLength: headerLength)
        let (r, handed) = try Self.sendOne(s)
        #expect(r == .sent(handed), "slirp helper=\(helper), header \(headerLength): \(r) for \(handed) bytes handed over")
    }
}
