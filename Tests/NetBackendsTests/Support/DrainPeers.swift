/// The python3 side of the drain tests (standard library only): a steady stream peer
/// that keeps netbe busy writing to the other side (it floods frames of ethertype
/// 0x88b6) and collects the tagged frames (0x88b5, "NBTX", round and index) that reach
/// it, while `shortLived` — the test's own loop — sends `n` tagged frames in each of
/// `rounds` rounds through peers that leave at once. Prints how many distinct tagged
/// frames arrived. Arguments: STEADY-ADDRESS ROUNDS N [EXTRA...], addresses as netbe's
/// (`unix:PATH`, `tcp:HOST:PORT`); `tagged(k, i)` builds round k's frame i.
enum DrainPeers {
    static func script(floodPayload: Int, floodBatch: Int, floodPause: Double, shortLived: String) -> String {
        """
        import os, socket, struct, sys, threading, time
        steady_address, rounds, n, extra = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
        def connect(addr):
            kind, rest = addr.split(":", 1)
            if kind == "unix":
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(rest)
            else:
                host, port = rest.rsplit(":", 1)
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.connect((host, int(port)))
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s
        def frame(ethertype, body):
            return b"\\xff" * 6 + b"\\x02\\x00\\x00\\x00\\x00\\x01" + struct.pack("!H", ethertype) + body
        def record(f):
            return struct.pack("!I", len(f)) + f
        def tagged(k, i):
            return frame(0x88b5, b"NBTX" + struct.pack("!II", k, i) + b"x" * 40)
        steady = connect(steady_address)
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
                    if f[12:14] == b"\\x88\\xb5" and f[14:18] == b"NBTX":
                        with lock: seen.add(f[18:26])
        def flood():
            batch = record(frame(0x88b6, b"F" * \(floodPayload))) * \(floodBatch)
            try:
                while True:
                    steady.sendall(batch)
                    if \(floodPause) > 0: time.sleep(\(floodPause))
            except OSError:
                pass
        threading.Thread(target=reader, daemon=True).start()
        threading.Thread(target=flood, daemon=True).start()
        time.sleep(0.2)
        \(shortLived)
        deadline = time.time() + 5
        while time.time() < deadline:
            with lock:
                if len(seen) >= rounds * n: break
            time.sleep(0.05)
        with lock: print(len(seen))
        """
    }
}
