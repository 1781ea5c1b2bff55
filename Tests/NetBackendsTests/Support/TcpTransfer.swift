import Foundation

/// One TCP stream between two test namespaces, checked end to end: the client sends
/// deterministic pseudo-random bytes and prints their sha256, the server prints the
/// sha256 of what it received. Both are Debian's python3 given the script with -c (no file
/// to clean up), started by PID in their namespace.
enum TcpTransfer {
    static let script = """
        import hashlib, random, socket, sys

        def server(host, port, progress):
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            s.listen(1)
            print("listening", flush=True)
            c, _ = s.accept()
            h, n, told = hashlib.sha256(), 0, False
            while True:
                b = c.recv(1 << 20)
                if not b:
                    break
                h.update(b)
                n += len(b)
                if progress and not told and n >= progress:
                    print("progress", flush=True)
                    told = True
            print(f"received {n} {h.hexdigest()}", flush=True)
            c.close()

        def client(host, port, size, seed):
            data = random.Random(seed).randbytes(size)
            c = socket.create_connection((host, port), timeout=120)
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
            c.recv(1)   # the server closes once it has read everything
            print(f"sent {size} {hashlib.sha256(data).hexdigest()}", flush=True)

        if sys.argv[1] == "server":
            server(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        else:
            client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        """

    /// Starts a server on `host`:`port` in `ns` and waits until it listens. With
    /// `progressAfter` > 0 it prints `progress` once that many bytes arrived.
    static func server(in ns: TestNamespace, host: String, port: Int, progressAfter: Int = 0) throws -> TestProcess {
        let p = try ns.spawn([debianPython, "-c", script, "server", host, String(port), String(progressAfter)])
        try p.waitForLine("listening")
        return p
    }

    static func client(in ns: TestNamespace, host: String, port: Int, bytes: Int, seed: Int) throws -> TestProcess {
        try ns.spawn([debianPython, "-c", script, "client", host, String(port), String(bytes), String(seed)])
    }

    /// "sent N SHA" / "received N SHA" -> (N, SHA), after the process exited 0.
    static func result(_ p: TestProcess, _ word: String, seconds: Double = 90) throws -> (bytes: Int, sha256: String) {
        let status = try p.wait(seconds: seconds)
        guard status == 0 else { throw TestFailure("\(word) side exited \(status): \(p.stderr)") }
        guard let line = p.stdout.split(separator: "\n").first(where: { $0.hasPrefix(word + " ") }) else {
            throw TestFailure("no '\(word)' line from the \(word) side: \(p.stdout) \(p.stderr)")
        }
        let f = line.split(separator: " ")
        guard f.count == 3, let n = Int(f[1]) else { throw TestFailure("bad line: \(line)") }
        return (n, String(f[2]))
    }

    /// Runs one whole transfer from `from` to `to` (server at `host` in `to`) and checks it.
    static func run(from: TestNamespace, to: TestNamespace, host: String, port: Int, bytes: Int, seed: Int) throws -> (sent: String, received: String) {
        let server = try server(in: to, host: host, port: port)
        let client = try client(in: from, host: host, port: port, bytes: bytes, seed: seed)
        let sent = try result(client, "sent")
        let received = try result(server, "received")
        guard received.bytes == bytes, sent.bytes == bytes else {
            throw TestFailure("sent \(sent.bytes) bytes, received \(received.bytes), wanted \(bytes)")
        }
        return (sent.sha256, received.sha256)
    }
}
