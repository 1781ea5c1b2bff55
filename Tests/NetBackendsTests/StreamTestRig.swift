import Foundation

/// A unique socket path in /tmp for one test, removed when the value goes away.
final class TestSocketPath {
    nonisolated(unsafe) private static var counter = 0
    private static let lock = NSLock()
    let path: String

    init(_ label: String) {
        let n = TestSocketPath.lock.withLock { () -> Int in TestSocketPath.counter += 1; return TestSocketPath.counter }
        path = "/tmp/nbt\(getpid())-\(label)\(n).sock"
        unlink(path)
    }

    deinit { unlink(path) }
}

/// Two namespaces, each given a tap by its own `netbe connect`, the two netbe joined
/// by a socket transport: `tap0,netns=A <-> LEFT ... RIGHT <-> tap0,netns=B`.
/// A is 10.77.0.1/24, B 10.77.0.2/24.
final class TwoTapRig {
    let a: TestNamespace
    let b: TestNamespace
    var left: TestProcess?
    var right: TestProcess?
    let leftSpec: String
    let rightSpec: String

    /// `leftSpec` starts first (the listening or local side), then `rightSpec`.
    /// `rightTapOptions` (e.g. `,mac=...`) are appended to B's tap spec.
    init(left leftSpec: String, right rightSpec: String, label: String, rightTapOptions: String = "") throws {
        try requireTool("ip", package: "iproute2")
        a = try TestNamespace(label + "a")
        b = try TestNamespace(label + "b")
        self.leftSpec = leftSpec
        self.rightSpec = rightSpec
        try startLeft()
        right = try NetbeBinary.start(["connect", rightSpec, "tap0,netns=\(b.name)\(rightTapOptions)"])
        try b.address("tap0", "10.77.0.2/24")
    }

    func startLeft() throws {
        left = try NetbeBinary.start(["connect", "tap0,netns=\(a.name)", leftSpec])
        try a.address("tap0", "10.77.0.1/24")
    }

    /// Pings B from A until one answer comes (ARP and a link coming up take a moment).
    func waitPing(seconds: Double = 10) throws {
        try waitUntil(seconds, "ping 10.77.0.2 from \(a.name)") {
            (try? a.run("ping", "-c", "1", "-W", "1", "10.77.0.2")) != nil
        }
    }

    /// Stops both netbe processes; their counters (stdout JSON) by side.
    func stop() throws -> (left: [[String: Any]], right: [[String: Any]]) {
        var l: [[String: Any]] = [], r: [[String: Any]] = []
        if let p = right { _ = try p.stop(); r = try NetbeBinary.counters(p.stdout) }
        if let p = left { _ = try p.stop(); l = try NetbeBinary.counters(p.stdout) }
        return (l, r)
    }
}

/// Sends `bytes` random bytes over TCP from `from` to a server in `to` at `ip`, and
/// checks that the SHA-256 both ends compute agree.
func checkedTransfer(from: TestNamespace, to: TestNamespace, ip: String, bytes: Int, port: Int = 5201) throws {
    try requireTool("python3", package: "python3")
    let server = """
    import socket, hashlib, sys
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", \(port))); s.listen(1); print("listening", flush=True)
    c, _ = s.accept(); h = hashlib.sha256(); n = 0
    while True:
        d = c.recv(1 << 20)
        if not d: break
        h.update(d); n += len(d)
    print(n, h.hexdigest(), flush=True)
    """
    let client = """
    import socket, hashlib, os, time
    data = os.urandom(\(bytes))
    for i in range(100):
        try:
            c = socket.create_connection(("\(ip)", \(port)), timeout=5); break
        except OSError:
            time.sleep(0.1)
    c.settimeout(60); c.sendall(data); c.shutdown(socket.SHUT_WR); c.recv(1)
    print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
    """
    let srv = try to.spawn(["python3", "-c", server])
    try srv.waitForLine("listening")
    let cli = try from.spawn(["python3", "-c", client])
    let status = try cli.wait(seconds: 120)
    guard status == 0 else { throw TestFailure("transfer client exited \(status): \(cli.stderr)") }
    _ = try srv.wait(seconds: 30)
    let sent = cli.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    let got = srv.stdout.split(separator: "\n").last.map(String.init) ?? ""
    guard sent == got, sent.hasPrefix("\(bytes) ") else {
        throw TestFailure("transfer mismatch: sent '\(sent)', received '\(got)'")
    }
}

/// The `gso_frames` summed over a netbe's direction counters.
func gsoFrames(_ counters: [[String: Any]]) -> Int {
    counters.reduce(0) { $0 + (($1["gso_frames"] as? Int) ?? 0) }
}
