import Foundation
import Testing

/// Each bad input of issue 3 item 5 drops that connection with a log line naming why,
/// and the listener then serves a well-behaved client.
@Suite(.serialized) struct StreamBadInputTests {
    enum Bad: String, CaseIterable, Sendable {
        case zeroLength, tooLong, tooLongWithVnet, garbage, closedMidFrame
    }

    static func bytes(_ bad: Bad) -> [UInt8] {
        switch bad {
        case .zeroLength: return [0, 0, 0, 0] + [UInt8](repeating: 0xaa, count: 60)
        case .tooLong: return [0, 1, 0, 0x12] + [UInt8](repeating: 0, count: 64)              // 65554 = 65535+14+4+1
        case .tooLongWithVnet: return [0, 1, 0, 0x1e] + [UInt8](repeating: 0, count: 64)      // 65566 = 65554+12
        case .garbage: return Array("GET / HTTP/1.1\r\nHost: example\r\n\r\n".utf8)
        case .closedMidFrame: return [0, 0, 0, 100] + [UInt8](repeating: 0x55, count: 10)
        }
    }

    static func reason(_ bad: Bad) -> String {
        switch bad {
        case .zeroLength: return "length 0"
        case .tooLong: return "length 65554 in the frame header is above the largest legal frame (65553)"
        case .tooLongWithVnet: return "length 65566 in the frame header is above the largest legal frame (65565)"
        case .garbage: return "is above the largest legal frame"
        case .closedMidFrame: return "closed the connection in the middle of a frame"
        }
    }

    @Test(arguments: Bad.allCases)
    func badInputDropsOnlyThatConnection(bad: Bad) throws {
        let ns = try TestNamespace("bad")
        let sock = TestSocketPath("bad")
        let vnet = bad == .tooLongWithVnet ? ",vnet=on" : ""
        let netbe = try NetbeBinary.start(["connect", "tap0,netns=\(ns.name)", "stream,listen=unix:\(sock.path)\(vnet)"])
        try ns.address("tap0", "10.77.0.1/24")
        do {
            let client = try RawStreamClient(unixPath: sock.path)
            try client.write(Self.bytes(bad))
            if bad == .closedMidFrame {
                usleep(100_000)
                shutdown(client.fd, Int32(SHUT_WR))
            }
            #expect(client.peerClosed(), "netbe closed the bad connection")
        }
        try waitUntil(5, "a log line naming why") { netbe.stderr.contains(Self.reason(bad)) }
        #expect(netbe.stderr.contains("dropping peer"))
        #expect(netbe.isRunning)
        if bad == .tooLongWithVnet { _ = try netbe.stop(); return }   // no plain frames on a vnet=on stream

        // A good client is served afterwards: its ARP request is answered over the stream.
        let good = try RawStreamClient(unixPath: sock.path)
        let target: [UInt8] = [10, 77, 0, 1]
        var answered = false
        for _ in 0..<10 where !answered {
            try good.sendFrame(TestFrames.arpRequest(from: [10, 77, 0, 9], for: target))
            while let f = good.readFrame() {
                if TestFrames.isARPReply(f, from: target) { answered = true; break }
            }
        }
        #expect(answered, "the listener served the next client: \(netbe.stderr)")
        #expect(try netbe.stop() == 0)
    }
}
