import CNetBackends
import Foundation

/// A namespace whose tap0 is joined by `netbe connect` to a slirp backend: the guest
/// side of user-mode networking, as a VM would see it. Everything it started (netbe,
/// the namespace with its tap) goes away with it, also when a test fails.
final class SlirpNetwork {
    let ns: TestNamespace
    let netbe: TestProcess
    let spec: String

    /// `options` are appended to `slirp,helper=on|off`, `tapOptions` to the tap's spec;
    /// `extra` to the command line.
    init(helper: Bool, options: String = "", tapOptions: String = "", extra: [String] = []) throws {
        try requireTool("busybox", package: "busybox-static")
        ns = try TestNamespace("slirp")
        spec = "slirp,helper=\(helper ? "on" : "off")" + (options.isEmpty ? "" : "," + options)
        let tap = "tap0,netns=\(ns.name)" + (tapOptions.isEmpty ? "" : "," + tapOptions)
        netbe = try NetbeBinary.start(["connect", tap, spec] + extra)
        try ns.waitCarrier("tap0")
    }

    deinit {
        _ = try? netbe.stop()
        ns.delete()
    }

    /// A DHCP lease on tap0 (address and default route set); returns udhcpc's lease line.
    @discardableResult
    func dhcp() throws -> String {
        try DhcpLease.obtain(in: ns).line
    }

    /// Fetches `url` with busybox wget inside the namespace; nil when it fails. The time
    /// limit comes from timeout(1): Debian's busybox-static wget crashes on its own `-T`.
    func fetch(_ url: String, seconds: Int = 10) throws -> Data? {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("nbt-fetch-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        let p = try ns.spawn(["timeout", String(seconds), "busybox", "wget", "-q", "-O", file, url])
        guard try p.wait(seconds: Double(seconds) + 5) == 0 else { return nil }
        return FileManager.default.contents(atPath: file)
    }

    /// The helper process (netbe's child), when there is exactly one.
    func helperPID() -> Int32? {
        let kids = childPIDs(of: netbe.pid)
        return kids.count == 1 ? kids[0] : nil
    }
}


/// Process ids whose parent is `pid` (from /proc/*/stat, field 4).
func childPIDs(of pid: Int32) -> [Int32] {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    return entries.compactMap { e -> Int32? in
        guard let n = Int32(e), let stat = try? String(contentsOfFile: "/proc/\(e)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 2 && Int32(fields[1]) == pid ? n : nil
    }
}

/// The real user id of a process (Uid: line of /proc/PID/status).
func processUID(_ pid: Int32, task: String? = nil) -> Int? {
    let path = task.map { "/proc/\(pid)/task/\($0)/status" } ?? "/proc/\(pid)/status"
    guard let s = try? String(contentsOfFile: path, encoding: .utf8),
          let line = s.split(separator: "\n").first(where: { $0.hasPrefix("Uid:") }) else { return nil }
    return line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first.flatMap { Int($0) }
}

/// A directory with one random file, served over HTTP on 127.0.0.1 by python3.
final class LoopbackHTTPServer {
    let port: Int
    let directory: URL
    let content: Data
    let fileName = "payload.bin"
    private let process: TestProcess

    init(bytes: Int = 512 * 1024) throws {
        try requireTool("python3", package: "python3")
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("nbt-www-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var g = SystemRandomNumberGenerator()
        content = Data((0..<bytes).map { _ in UInt8.random(in: 0...255, using: &g) })
        try content.write(to: directory.appendingPathComponent(fileName))
        port = try freeLoopbackPort()
        process = try TestProcess(["python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory", directory.path, String(port)])
        try waitUntil(10, "the HTTP server on 127.0.0.1:\(port)") { tcpConnects("127.0.0.1", port) }
    }

    // SIGKILL: a stateless test server, and pyenv's python3 may not die of SIGTERM at once.
    deinit {
        _ = try? process.stop(SIGKILL)
        try? FileManager.default.removeItem(at: directory)
    }
}

/// A UDP server on 127.0.0.1 that answers every datagram with "echo:" + the datagram.
final class LoopbackUDPEcho {
    let port: Int
    private let process: TestProcess

    init() throws {
        try requireTool("python3", package: "python3")
        port = try freeLoopbackPort(udp: true)
        let code = """
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", \(port)))
        print("listening", flush=True)
        while True:
            data, peer = s.recvfrom(2048)
            s.sendto(b"echo:" + data, peer)
        """
        process = try TestProcess(["python3", "-c", code])
        try process.waitForLine("listening")
    }

    deinit { _ = try? process.stop(SIGKILL) }
}

/// Sends one UDP datagram from inside `ns` to HOST:PORT and returns the first reply
/// (3 tries of 2 s each), or nil.
func udpExchange(in ns: TestNamespace, host: String, port: Int, message: String) throws -> String? {
    let code = """
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    for _ in range(3):
        s.sendto(b"\(message)", ("\(host)", \(port)))
        try:
            print(s.recvfrom(2048)[0].decode(), flush=True); sys.exit(0)
        except socket.timeout:
            pass
    sys.exit(1)
    """
    let out = try sh(["ip", "netns", "exec", ns.name, "python3", "-c", code], allowFailure: true)
    let line = out.trimmingCharacters(in: .whitespacesAndNewlines)
    return line.isEmpty ? nil : line
}

/// Whether a TCP connection to HOST:PORT (IPv4) is accepted within a second.
func tcpConnects(_ host: String, _ port: Int) -> Bool {
    let s = socket(AF_INET, cnb_SOCK_STREAM, 0)
    guard s >= 0 else { return false }
    defer { close(s) }
    var tv = timeval(tv_sec: 1, tv_usec: 0)
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_port = UInt16(port).bigEndian
    a.sin_addr.s_addr = inet_addr(host)
    return withUnsafePointer(to: &a) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}

/// Fetches http://HOST:PORT/PATH from the host side with busybox wget; nil on failure.
func hostFetch(_ url: String) throws -> Data? {
    let file = FileManager.default.temporaryDirectory.appendingPathComponent("nbt-hfetch-\(UUID().uuidString.prefix(8))").path
    defer { try? FileManager.default.removeItem(atPath: file) }
    let p = try TestProcess(["timeout", "10", "busybox", "wget", "-q", "-O", file, url])
    guard try p.wait(seconds: 15) == 0 else { return nil }
    return FileManager.default.contents(atPath: file)
}
