import Foundation
import Testing

/// A unix datagram peer that sent its frames and left: netbe's next send to it must not
/// cost the frames it sent before leaving. (Linux purges a unix datagram socket's whole
/// receive queue when it sends to, or re-connects away from, a connected peer that died:
/// unix_dgram_disconnected in net/unix/af_unix.c.)
@Suite(.serialized) struct DgramDrainTests {
    /// `netbe connect dgram,local=L,remote=R stream,listen=S`: a steady stream peer on S
    /// floods frames (so netbe keeps sending to R) and counts what arrives from R; on R,
    /// short-lived datagram peers come one after another, each sends its frames to L and
    /// closes.
    @Test func shortLivedDatagramPeersLoseNoFrame() throws {
        try requireDebianPython()
        let l = TestSocketPath("dgd-l"), r = TestSocketPath("dgd-r"), s = TestSocketPath("dgd-s")
        let netbe = try NetbeBinary.start(["connect", "dgram,local=unix:\(l.path),remote=unix:\(r.path)", "stream,listen=unix:\(s.path)"])
        defer { _ = try? netbe.stop() }
        let rounds = 40, frames = 8
        let peers = try TestProcess([debianPython, "-c", Self.peers, "unix:\(s.path)", String(rounds), String(frames), l.path, r.path])
        try peers.wait(seconds: 60)
        let got = Int(peers.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        _ = try netbe.stop()
        #expect(got == rounds * frames, "frames from short-lived datagram peers lost: \(got) of \(rounds * frames) arrived; \(peers.stderr)\n\(netbe.stdout)")
    }

    /// Each round: a datagram socket bound on R (netbe connects to it and writes to it),
    /// its frames sent to L, then closed and unlinked.
    static let peers = DrainPeers.script(floodPayload: 200, floodBatch: 4, floodPause: 0.0005, shortLived: """
        l, r = extra
        for k in range(rounds):
            d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try: os.unlink(r)
            except FileNotFoundError: pass
            d.bind(r)
            time.sleep(0.03)
            for i in range(n): d.sendto(tagged(k, i), l)
            d.close(); os.unlink(r)
            time.sleep(0.03)
        """)
}
