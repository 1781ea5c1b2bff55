import Foundation
import NetBackends
import Testing

/// Nothing corrupt is laundered, end to end: a plain dgram peer (the test, at 10.66.0.2)
/// talks TCP to an application in a namespace through the relay and a tap that takes TSO,
/// so the relay joins the peer's segments into NEEDS_CSUM super-frames. One segment of a
/// burst carries a flipped payload bit under its old checksum. It must reach the kernel
/// alone and unchanged: the kernel drops it (TcpInCsumErrors rises), the retransmission
/// fills the gap, and the application receives exactly the good bytes.
@Suite(.serialized) struct CorruptSegmentTests {
    static let ourMAC: [UInt8] = [0x02, 0x00, 0x00, 0x5e, 0x00, 0x02]
    static let ourIP: [UInt8] = [10, 66, 0, 2]
    static let kernelIP: [UInt8] = [10, 66, 0, 1]
    static let port: UInt16 = 5555

    /// Prints "listening", then "received N HEX" for everything read until end of file.
    static let server = """
        import socket
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("10.66.0.1", 5555))
        s.listen(1)
        print("listening", flush=True)
        c, _ = s.accept()
        data = b""
        while True:
            b = c.recv(65536)
            if not b:
                break
            data += b
        print(f"received {len(data)} {data.hex()}", flush=True)
        """

    /// TcpExt/Tcp InCsumErrors of the namespace (/proc/net/snmp, the `Tcp:` lines).
    static func inCsumErrors(_ ns: TestNamespace) throws -> Int {
        let lines = try ns.run("cat", "/proc/net/snmp").split(separator: "\n").filter { $0.hasPrefix("Tcp:") }
        guard lines.count == 2 else { throw TestFailure("no Tcp lines in /proc/net/snmp") }
        let names = lines[0].split(separator: " "), values = lines[1].split(separator: " ")
        guard let i = names.firstIndex(of: "InCsumErrors"), let v = Int(values[i]) else {
            throw TestFailure("no InCsumErrors in: \(lines[0])")
        }
        return v
    }

    @Test(.timeLimit(.minutes(1))) func corruptSegmentIsNotJoinedAndTheKernelDropsIt() throws {
        try requireDebianPython()
        let ns = try TestNamespace("csum")
        defer { ns.delete() }
        try ns.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        let netbePath = TestSocketPath("csum-netbe"), clientPath = TestSocketPath("csum-peer")
        let client = try RawDgramClient(boundAt: clientPath.path)
        let loop = try NetEventLoop()
        let dgram = try BackendRegistry.shared.open("dgram,local=unix:\(netbePath.path),remote=unix:\(clientPath.path)", on: loop)
        defer { dgram.close() }
        let tap = try BackendRegistry.shared.open("tap0,netns=\(ns.name)", on: loop)
        defer { tap.close() }
        let relay = try Relay(dgram, tap)
        #expect(tap.negotiatedFeatures.contains(.hostTSO4), "the tap does not take TSO: nothing would be joined")
        try ns.address("tap0", "10.66.0.1/24")
        try sh("ip", "-n", ns.name, "neigh", "replace", "10.66.0.2", "lladdr", "02:00:00:5e:00:02", "dev", "tap0")
        let brief = try sh("ip", "-n", ns.name, "-br", "link", "show", "tap0")
        let fields = brief.split(separator: " ", omittingEmptySubsequences: true)
        let tapMAC = try #require(fields.count >= 3 ? parseMAC(String(fields[2])) : nil, "no MAC in \(brief)")
        let lt = try LoopThread(loop)
        try lt.sync { relay.start() }
        let app = try ns.spawn([debianPython, "-c", Self.server])
        try app.waitForLine("listening")
        let errorsBefore = try Self.inCsumErrors(ns)

        func frame(seq: UInt32, ack: UInt32, flags: UInt8, payload: [UInt8] = []) -> [UInt8] {
            let tcp = Frames.tcp(src: Self.ourIP, dst: Self.kernelIP, sourcePort: 40000, destinationPort: Self.port,
                                 sequence: seq, acknowledgment: ack, flags: flags, payload: payload)
            return Frames.ethernet(dst: tapMAC, src: Self.ourMAC, type: Frames.typeIPv4,
                                   Frames.ipv4(src: Self.ourIP, dst: Self.kernelIP, proto: Frames.protoTCP, id: 1, tcp))
        }
        func send(_ f: [UInt8]) throws { try client.send(f, to: netbePath.path) }

        // The handshake.
        let isn: UInt32 = 0x1000_0000
        try send(frame(seq: isn, ack: 0, flags: Frames.tcpSYNFlag))
        var theirs: UInt32?
        let deadline = Date().addingTimeInterval(5)
        while theirs == nil && Date() < deadline {
            guard let f = client.receive(), f.count >= 54, f[12] == 0x08, f[13] == 0x00, f[23] == Frames.protoTCP else { continue }
            let t = 14 + Int(f[14] & 0x0f) * 4
            if f[t + 13] == Frames.tcpSYNFlag | Frames.tcpACK {
                theirs = UInt32(f[t + 4]) << 24 | UInt32(f[t + 5]) << 16 | UInt32(f[t + 6]) << 8 | UInt32(f[t + 7])
            }
        }
        let y = try #require(theirs, "no SYN-ACK from the application's kernel") &+ 1
        try send(frame(seq: isn + 1, ack: y, flags: Frames.tcpACK))

        // A burst of 8 segments, queued while the loop thread is busy here, so that the relay
        // reads them ahead together and joins them; the fourth is corrupt.
        let mss = 1000, count = 8, bad = 3
        let data = (0..<mss * count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
        let segments = (0..<count).map { i in
            frame(seq: isn + 1 + UInt32(i * mss), ack: y, flags: Frames.tcpACK, payload: Array(data[i * mss..<(i + 1) * mss]))
        }
        var corrupt = segments[bad]
        corrupt[corrupt.count - 100] ^= 0x10          // the checksum field still describes the good bytes
        let burst = segments.enumerated().map { $0.offset == bad ? corrupt : $0.element }
        let fd = client.fd, to = netbePath.path
        let sent = try lt.sync {
            burst.reduce(0) { n, f in
                var a = RawDgramClient.address(to)
                let r = withUnsafePointer(to: &a) { p in
                    p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                        f.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, 0, sa, socklen_t(MemoryLayout<sockaddr_un>.size)) }
                    }
                }
                return n + (r == f.count ? 1 : 0)
            }
        }
        #expect(sent == count)
        usleep(300_000)
        // The sender retransmits the segment the receiver never acknowledged, then closes.
        try send(segments[bad])
        usleep(100_000)
        try send(frame(seq: isn + 1 + UInt32(mss * count), ack: y, flags: Frames.tcpFIN | Frames.tcpACK))

        try app.wait(seconds: 10)
        let words = app.stdout.split(separator: "\n").first { $0.hasPrefix("received") }?.split(separator: " ") ?? []
        #expect(words.count == 3 && words[1] == "\(data.count)", "\(app.stdout)")
        let hex = data.map { String(format: "%02x", $0) }.joined()
        #expect(words.count == 3 && words[2] == hex, "the application received other bytes than were sent: corrupt data was laundered")
        let errorsAfter = try Self.inCsumErrors(ns)
        #expect(errorsAfter > errorsBefore, "the kernel counted no checksum error (InCsumErrors \(errorsBefore) -> \(errorsAfter))")
        try lt.sync { relay.stop() }
        #expect(try lt.stop() == nil)
        let stats = relay.forward.statistics
        #expect(stats.gsoFrames > 0, "nothing was joined: the test did not test joining")
    }
}
