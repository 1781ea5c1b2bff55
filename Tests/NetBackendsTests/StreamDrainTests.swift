import Foundation
import Testing

/// Nothing a peer sent is lost when it leaves: short-lived peers that write their frames
/// and close at once, while netbe is writing to them, must have every frame relayed.
@Suite(.serialized) struct StreamDrainTests {
    /// `netbe connect stream,listen=A stream,listen=B`: a steady peer on B floods frames
    /// towards A (so netbe is always writing to A's peer) and counts what arrives from
    /// A; on A, peers come one after another, each writes `frames` frames and closes.
    @Test(arguments: ["unix", "tcp"])
    func shortLivedPeersLoseNoFrame(_ transport: String) throws {
        try requireDebianPython()
        let (a, b): (String, String)
        let pa = TestSocketPath("drain-a"), pb = TestSocketPath("drain-b")
        if transport == "unix" {
            (a, b) = ("unix:\(pa.path)", "unix:\(pb.path)")
        } else {
            (a, b) = ("tcp:127.0.0.1:\(try freeLoopbackPort())", "tcp:127.0.0.1:\(try freeLoopbackPort())")
        }
        let netbe = try NetbeBinary.start(["connect", "stream,listen=\(a)", "stream,listen=\(b)"])
        defer { _ = try? netbe.stop() }
        let rounds = 60, frames = 20
        let peers = try TestProcess([debianPython, "-c", Self.peers, b, String(rounds), String(frames), a])
        try peers.wait(seconds: 60)
        let got = Int(peers.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        _ = try netbe.stop()
        #expect(got == rounds * frames, "frames from short-lived peers lost: \(got) of \(rounds * frames) arrived; \(peers.stderr)\n\(netbe.stdout)")
    }

    /// A peer that closes in the middle of a frame: the whole frames before it are
    /// relayed, the cut one is counted as `truncated` in netbe's report.
    @Test func aFrameCutByTheCloseIsCountedAsTruncated() throws {
        let pa = TestSocketPath("cut-a"), pb = TestSocketPath("cut-b")
        let netbe = try NetbeBinary.start(["connect", "stream,listen=unix:\(pa.path)", "stream,listen=unix:\(pb.path)"])
        defer { _ = try? netbe.stop() }
        let receiver = try RawStreamClient(unixPath: pb.path)
        let frame = [UInt8](repeating: 0xff, count: 6) + [2, 0, 0, 0, 0, 1, 0x88, 0xb5] + [UInt8](repeating: 7, count: 50)
        do {
            let sender = try RawStreamClient(unixPath: pa.path)
            try sender.sendFrame(frame)
            try sender.sendFrame(frame)
            try sender.write([0, 0, 0, 64] + [UInt8](repeating: 1, count: 20))
        }
        #expect(receiver.readFrame() == frame)
        #expect(receiver.readFrame() == frame)
        try waitUntil(5, "netbe to drop the peer") { netbe.stderr.contains("in the middle of a frame") }
        _ = try netbe.stop()
        let counters = try NetbeBinary.counters(netbe.stdout)
        let forward = try #require(counters.first { ($0["from"] as? String)?.contains("cut-a") == true }, "\(netbe.stdout)")
        #expect((forward["drops"] as? [String: Any])?["truncated"] as? Int == 1, "\(forward)")
        #expect(forward["frames"] as? Int == 2, "\(forward)")
    }

    /// Each round: a peer connects to A, writes its frames and closes at once.
    static let peers = DrainPeers.script(floodPayload: 1000, floodBatch: 16, floodPause: 0, shortLived: """
        a = extra[0]
        for k in range(rounds):
            s = connect(a)
            s.sendall(b"".join(record(tagged(k, i)) for i in range(n)))
            s.close()
            time.sleep(0.02)
        """)
}
