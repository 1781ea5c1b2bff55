import Foundation
import Testing

/// Back-pressure, never death: the stream peer's reading process is SIGSTOPped, so
/// netbe's tap->stream direction fills the socket and must wait; the peer's writing
/// process keeps sending, and that direction (stream->tap) must keep flowing. After
/// SIGCONT both flow again.
@Suite(.serialized) struct StreamBackPressureTests {
    /// The peer: the parent reads records and prints its count; a forked child writes
    /// broadcast frames (ethertype 0x88b5, IEEE local experimental) on the same socket.
    static let peer = """
    import socket, os, sys, time, struct
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(sys.argv[1])
    child = os.fork()
    if child == 0:
        frame = b"\\xff" * 6 + bytes([2, 0, 0, 0, 0, 9]) + b"\\x88\\xb5" + b"x" * 986
        record = struct.pack(">I", len(frame)) + frame
        while True:
            s.sendall(record); time.sleep(0.002)
    print("writer", child, flush=True)
    buf = b""; n = 0; last = 0
    while True:
        d = s.recv(1 << 16)
        if not d: break
        buf += d
        while len(buf) >= 4:
            l = struct.unpack(">I", buf[:4])[0]
            if len(buf) < 4 + l: break
            buf = buf[4 + l:]; n += 1
        if time.time() - last > 0.05:
            print("rx", n, flush=True); last = time.time()
    """

    static let flood = """
    import socket, time
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); end = time.time() + 30
    while time.time() < end:
        try: u.sendto(b"y" * 1400, ("10.77.0.9", 9))
        except OSError: time.sleep(0.001)
    """

    static func lastCount(_ p: TestProcess) -> Int {
        p.stdout.split(separator: "\n").last { $0.hasPrefix("rx ") }.flatMap { Int($0.dropFirst(3)) } ?? -1
    }

    static func tapReceived(_ ns: TestNamespace) throws -> Int {
        Int(try ns.run("cat", "/sys/class/net/tap0/statistics/rx_packets").trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    @Test func stoppedPeerStallsOneDirectionOnly() throws {
        try requireTool("python3", package: "python3")
        let ns = try TestNamespace("bp")
        let sock = TestSocketPath("bp")
        let netbe = try NetbeBinary.start(["connect", "tap0,netns=\(ns.name)", "stream,listen=unix:\(sock.path)"])
        try ns.address("tap0", "10.77.0.1/24")
        try sh("ip", "-n", ns.name, "neigh", "add", "10.77.0.9", "lladdr", "02:00:00:00:00:09", "dev", "tap0")
        let peer = try TestProcess(["python3", "-c", Self.peer, sock.path])
        try waitUntil(10, "the peer's writer") { peer.stdout.contains("writer ") }
        let writerPID = Int32(peer.stdout.split(separator: "\n").first { $0.hasPrefix("writer ") }!.dropFirst(7))!
        defer { kill(writerPID, SIGKILL) }
        let flood = try ns.spawn(["python3", "-c", Self.flood])
        try waitUntil(10, "frames reaching the peer") { Self.lastCount(peer) > 200 }

        peer.signal(SIGSTOP)
        sleep(2)   // the socket buffers fill up; netbe's tap->stream direction must wait
        let stalled = Self.lastCount(peer)
        let before = try Self.tapReceived(ns)
        sleep(1)
        let after = try Self.tapReceived(ns)
        #expect(after - before > 100, "stream->tap kept flowing while the peer's reader was stopped (\(before) -> \(after))")
        #expect(netbe.isRunning)

        peer.signal(SIGCONT)
        try waitUntil(10, "tap->stream resuming after SIGCONT") { Self.lastCount(peer) > stalled + 500 }
        let resumed = try Self.tapReceived(ns)
        try waitUntil(5, "stream->tap still flowing") { try Self.tapReceived(ns) > resumed + 100 }
        _ = try flood.stop(SIGKILL)
        #expect(try netbe.stop() == 0)
        let counters = try NetbeBinary.counters(netbe.stdout)
        #expect(counters.count == 2)
    }
}
