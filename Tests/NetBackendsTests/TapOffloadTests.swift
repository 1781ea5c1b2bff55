import Foundation
import NetBackends
import Testing

/// Offloads through a real tap, against the kernel's TCP: with GUEST_CSUM/GUEST_TSO4
/// accepted the kernel hands us TSO super-frames with a correct virtio-net header; with
/// nothing accepted it hands only wire-sized, fully checksummed frames; with CSUM/HOST_TSO4
/// accepted it takes a super-frame from us and segments it (virtio 1.2, 5.1.6.2).
@Suite struct TapOffloadTests {
    static let ours = TapFixture.ourIP, kernel = TapFixture.kernelIP
    static let mss: UInt16 = 1460
    static let ourPort: UInt16 = 40100

    /// The bytes the kernel-side server sends: a repeating 0...250 ramp (251 is prime,
    /// so a misplaced segment shows).
    static func pattern(_ offset: Int, _ count: Int) -> [UInt8] { (offset..<(offset + count)).map { UInt8($0 % 251) } }

    /// Starts a python3 TCP server in the fixture's namespace; `code` runs with `c` the accepted socket.
    private func server(_ f: TapFixture, port: UInt16, _ code: String) throws -> TestProcess {
        try requireDebianPython()
        let p = try f.ns.spawn([debianPython, "-c", """
            import socket, sys, time
            s = socket.socket()
            s.bind(("10.66.0.1", \(port)))
            s.listen()
            print("listening", flush=True)
            c, _ = s.accept()
            \(code)
            time.sleep(30)
            """])
        try p.waitForLine("listening")
        return p
    }

    /// SYN (MSS 1460, window scale 7) -> SYN-ACK -> ACK. Returns (our next seq, the kernel's next seq).
    private func handshake(_ f: TapFixture, port: UInt16, isn: UInt32) throws -> (UInt32, UInt32) {
        let options: [UInt8] = [2, 4, UInt8(Self.mss >> 8), UInt8(Self.mss & 0xff), 1, 3, 3, 7]
        let syn = Frames.tcp(src: Self.ours, dst: Self.kernel, sourcePort: Self.ourPort, destinationPort: port,
                             sequence: isn, flags: Frames.tcpSYNFlag, options: options)
        _ = try f.sendIPv4(proto: Frames.protoTCP, syn)
        let synack = try f.receive("SYN-ACK") { $0.isIPv4 && $0.ipProtocol == Frames.protoTCP && $0.tcpDestinationPort == Self.ourPort }
        #expect(synack.tcpFlags & 0x3f == Frames.tcpSYNFlag | Frames.tcpACK)
        let theirs = synack.tcpSequence &+ 1
        let ack = Frames.tcp(src: Self.ours, dst: Self.kernel, sourcePort: Self.ourPort, destinationPort: port,
                             sequence: isn &+ 1, acknowledgment: theirs, flags: Frames.tcpACK)
        _ = try f.sendIPv4(proto: Frames.protoTCP, id: 2, ack)
        return (isn &+ 1, theirs)
    }

    @Test(arguments: [true, false])
    func kernelStreamsToUsWithOrWithoutTSO(acceptTSO: Bool) throws {
        let features: VirtioNetFeatures = acceptTSO ? [.guestCsum, .guestTSO4] : []
        let f = try TapFixture(headerLength: 12, features: features)
        try f.addStaticNeighbour()
        let port: UInt16 = 5003
        let srv = try server(f, port: port, "c.sendall(bytes(i % 251 for i in range(65536)))")
        _ = srv
        let (_, start) = try handshake(f, port: port, isn: 0x0100_0000)
        // The first flight (initial window: 10 segments) arrives without further ACKs.
        var received = 0
        var gsoFrames = 0
        let deadline = Date().addingTimeInterval(3)
        while received < 10 * Int(Self.mss) && Date() < deadline {
            let (h, frame) = try f.receive("data from the kernel") {
                $1.isIPv4 && $1.ipProtocol == Frames.protoTCP && $1.tcpDestinationPort == Self.ourPort && !$1.tcpPayload.isEmpty
            }
            let header = try #require(h)
            let payload = Array(frame.tcpPayload)
            #expect(frame.tcpSequence == start &+ UInt32(received), "segment out of order")
            #expect(payload == Self.pattern(received, payload.count), "payload at offset \(received) differs")
            #expect(frame.ipHeaderChecksumValid)
            if header.isGSO {
                gsoFrames += 1
                #expect(header.gsoType == .tcpv4)
                #expect(header.gsoSize == Self.mss, "gso_size should be the MSS we announced")
                #expect(header.flags.contains(.needsCsum))
                #expect(header.csumStart == 34 && header.csumOffset == 16, "checksum at the TCP header: \(header)")
                #expect(Int(header.headerLength) >= 54)
                #expect(payload.count > Int(Self.mss))
            } else {
                #expect(frame.bytes.count <= 1514, "a non-GSO frame must fit the wire")
                if !header.flags.contains(.needsCsum) {
                    #expect(frame.tcpChecksumValid, "a frame without NEEDS_CSUM must carry a valid checksum")
                }
            }
            received += payload.count
        }
        #expect(received >= 10 * Int(Self.mss), "only \(received) bytes of the first flight arrived")
        if acceptTSO {
            #expect(gsoFrames > 0, "GUEST_TSO4 accepted but the kernel sent no TSO frame")
        } else {
            #expect(gsoFrames == 0)
        }
    }

    @Test func kernelTakesOurTSOSuperFrame() throws {
        let f = try TapFixture(headerLength: 12, features: [.csum, .hostTSO4])
        try f.addStaticNeighbour()
        let port: UInt16 = 5004
        let total = 3000
        let srv = try server(f, port: port, """
            data = b""
            while len(data) < \(total):
                data += c.recv(65536)
            print("got", data.hex(), flush=True)
            """)
        let (seq, ack) = try handshake(f, port: port, isn: 0x0200_0000)
        let payload = Self.pattern(7, total)
        let segment = Frames.tcp(src: Self.ours, dst: Self.kernel, sourcePort: Self.ourPort, destinationPort: port,
                                 sequence: seq, acknowledgment: ack, flags: Frames.tcpACK | Frames.tcpPSH,
                                 payload: payload, partialChecksum: true)
        // One frame, three 1000-byte segments for the kernel to cut (GSO_TCPV4, NEEDS_CSUM).
        let header = VirtioNetHeader(flags: [.needsCsum], gsoType: .tcpv4, headerLength: 54, gsoSize: 1000,
                                     csumStart: 34, csumOffset: 16)
        #expect(try f.sendIPv4(proto: Frames.protoTCP, id: 3, segment, header: header) == .sent(12 + 14 + 20 + segment.count))
        try srv.waitForLine("got \(payload.map { String(format: "%02x", $0) }.joined())", seconds: 5)
        // And the kernel acknowledges all of it.
        let acked = try f.receive("the ACK for 3000 bytes") {
            $0.isIPv4 && $0.ipProtocol == Frames.protoTCP && $0.tcpDestinationPort == Self.ourPort
                && $0.tcpAcknowledgment == seq &+ UInt32(total)
        }
        #expect(acked.tcpFlags & Frames.tcpACK != 0)
    }
}
