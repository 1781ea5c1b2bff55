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
        let peers = try TestProcess([debianPython, "-c", Self.peers, l.path, r.path, s.path, String(rounds), String(frames)])
        try peers.wait(seconds: 60)
        let got = Int(peers.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        _ = try netbe.stop()
        #expect(got == rounds * frames, "frames from short-lived datagram peers lost: \(got) of \(rounds * frames) arrived; \(peers.stderr)\n\(netbe.stdout)")
    }

    static let peers = #"""
import os, socket, struct, sys, threading, time
l, r, s, rounds, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
def frame(ethertype, body):
    return b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + struct.pack("!H", ethertype) + body
steady = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); steady.connect(s)
seen = set(); lock = threading.Lock()
def reader():
    buf = b""
    while True:
        data = steady.recv(65536)
        if not data: return
        buf += data
        while len(buf) >= 4:
            length = struct.unpack("!I", buf[:4])[0]
            if len(buf) < 4 + length: break
            f, buf = buf[4:4 + length], buf[4 + length:]
            if f[12:14] == b"\x88\xb5" and f[14:18] == b"NBTX":
                with lock: seen.add(f[18:26])
def flood():
    f = frame(0x88b6, b"F" * 200); rec = struct.pack("!I", len(f)) + f
    try:
        while True:
            steady.sendall(rec * 4); time.sleep(0.0005)
    except OSError:
        pass
threading.Thread(target=reader, daemon=True).start()
threading.Thread(target=flood, daemon=True).start()
time.sleep(0.2)
for k in range(rounds):
    d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try: os.unlink(r)
    except FileNotFoundError: pass
    d.bind(r)
    time.sleep(0.03)   # netbe connects to us and writes to us meanwhile
    for i in range(n):
        d.sendto(frame(0x88b5, b"NBTX" + struct.pack("!II", k, i) + b"x" * 40), l)
    d.close(); os.unlink(r)
    time.sleep(0.03)
deadline = time.time() + 5
while time.time() < deadline:
    with lock:
        if len(seen) >= rounds * n: break
    time.sleep(0.05)
with lock: print(len(seen))
"""#
}
