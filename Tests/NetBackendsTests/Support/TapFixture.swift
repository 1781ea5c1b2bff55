import Foundation
import NetBackends
import Testing

/// A namespace with the library's tap in it and the kernel at 10.66.0.1/24 on that tap;
/// the test plays the VM at 10.66.0.2. No event loop runs, so the test thread is the
/// backend's only caller (the contract's loop thread).
final class TapFixture {
    static let ourMAC: [UInt8] = [0x02, 0x00, 0x00, 0x5e, 0x00, 0x02]
    static let ourIP: [UInt8] = [10, 66, 0, 2]
    static let kernelIP: [UInt8] = [10, 66, 0, 1]

    let ns: TestNamespace
    let loop: NetEventLoop
    let tap: NetBackend
    let headerLength: Int
    let tapMAC: [UInt8]
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 70_000, alignment: 16)

    /// Opens `device` with spec `options` and accepts `features` with `headerLength`.
    init(options: String = "", headerLength: Int = 0, features: VirtioNetFeatures = [], device: String = "tap0") throws {
        ns = try TestNamespace("tapk")
        // Without IPv6 the kernel sends nothing unasked (no router solicitations, no MLD).
        try ns.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        loop = try NetEventLoop()
        tap = try BackendRegistry.shared.open("\(device),netns=\(ns.name)\(options)", on: loop)
        self.headerLength = headerLength
        try tap.setCapabilities(features, vnetHeaderLength: headerLength)
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

    /// Sends `frame` behind a frontend header (`header` encoded at the frontend's length);
    /// `.sent` counts what the frontend handed over, header included (as the seed's writev).
    func send(_ frame: [UInt8], header: VirtioNetHeader = VirtioNetHeader()) throws -> SendResult {
        var bytes = [UInt8](repeating: 0, count: headerLength) + frame
        if headerLength > 0 {
            bytes.withUnsafeMutableBytes { header.encode(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<headerLength])) }
        }
        return try bytes.withUnsafeBytes { try tap.send($0) }
    }

    /// An IPv4 frame from us to the kernel.
    func sendIPv4(proto: UInt8, id: UInt16 = 1, _ l4: [UInt8], header: VirtioNetHeader = VirtioNetHeader()) throws -> SendResult {
        let ip = Frames.ipv4(src: Self.ourIP, dst: Self.kernelIP, proto: proto, id: id, l4)
        return try send(Frames.ethernet(dst: tapMAC, src: Self.ourMAC, type: Frames.typeIPv4, ip), header: header)
    }

    /// Receives until a frame satisfies `match` (others are skipped); returns it with
    /// its frontend header. Every header is checked against what was negotiated: no GSO
    /// without a GUEST_TSO/UFO/USO feature, no NEEDS_CSUM without GUEST_CSUM.
    func receive(seconds: Double = 3, _ what: String,
                 _ match: (VirtioNetHeader?, Frames.Parsed) -> Bool) throws -> (header: VirtioNetHeader?, frame: Frames.Parsed) {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            switch try tap.receive(into: buffer) {
            case .empty:
                usleep(1000)
            case .dropped(let length, let reason):
                throw TestFailure("a \(length)-byte frame was dropped (\(reason)) into a \(buffer.count)-byte buffer")
            case .frame(let length):
                let got = try split(length)
                if match(got.header, got.frame) { return got }
            }
        }
        throw TestFailure("no \(what) within \(seconds) s")
    }

    /// Receive for tests that look at the frame only.
    func receive(seconds: Double = 3, _ what: String, _ match: (Frames.Parsed) -> Bool) throws -> Frames.Parsed {
        try receive(seconds: seconds, what) { match($1) }.frame
    }

    private func split(_ length: Int) throws -> (header: VirtioNetHeader?, frame: Frames.Parsed) {
        guard length >= headerLength + 14 else { throw TestFailure("a \(length)-byte frame is too short") }
        var header: VirtioNetHeader?
        if headerLength > 0 {
            let h = try #require(VirtioNetHeader(decoding: UnsafeRawBufferPointer(rebasing: buffer[0..<headerLength])))
            let accepted = tap.negotiatedFeatures
            if accepted.isDisjoint(with: [.guestTSO4, .guestTSO6, .guestUFO, .guestUSO4, .guestUSO6]) {
                #expect(!h.isGSO, "GSO frame without a GUEST_TSO/UFO/USO feature accepted")
            }
            if !accepted.contains(.guestCsum) {
                #expect(!h.flags.contains(.needsCsum), "NEEDS_CSUM without GUEST_CSUM accepted")
            }
            header = h
        }
        return (header, Frames.Parsed(bytes: Array(buffer[headerLength..<length])))
    }

    func arpRequest() -> [UInt8] {
        Frames.arpRequest(senderMAC: Self.ourMAC, senderIP: Self.ourIP, targetIP: Self.kernelIP)
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
