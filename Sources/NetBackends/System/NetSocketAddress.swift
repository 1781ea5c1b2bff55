#if canImport(Glibc)
import Glibc
#endif

/// A socket address as written in a spec (CONTRACT.md): `unix:PATH`, `tcp:HOST:PORT`,
/// `udp:HOST:PORT`, with IPv6 hosts in brackets (`tcp:[::1]:5555`).
public enum NetSocketAddress: Equatable, Sendable, CustomStringConvertible {
    case unix(path: String)
    case tcp(host: String, port: UInt16)
    case udp(host: String, port: UInt16)

    public var description: String {
        switch self {
        case .unix(let path): return "unix:\(path)"
        case .tcp(let host, let port): return "tcp:\(Self.bracketed(host)):\(port)"
        case .udp(let host, let port): return "udp:\(Self.bracketed(host)):\(port)"
        }
    }

    private static func bracketed(_ host: String) -> String { host.contains(":") ? "[\(host)]" : host }

    /// Parses the text of an address; the error says which part is wrong.
    public init(parsing text: String) throws(NetBackendError) {
        func bad(_ why: String) -> NetBackendError { .badSpec("bad address '\(text)': \(why)") }
        guard let colon = text.firstIndex(of: ":") else {
            throw bad("expected unix:PATH, tcp:HOST:PORT or udp:HOST:PORT")
        }
        let scheme = text[..<colon]
        let rest = String(text[text.index(after: colon)...])
        switch scheme {
        case "unix":
            guard !rest.isEmpty else { throw bad("the path is empty") }
            // sun_path holds 108 bytes including the terminating NUL (unix(7)).
            guard rest.utf8.count < 108 else { throw bad("the path is longer than 107 bytes") }
            self = .unix(path: rest)
        case "tcp", "udp":
            let (host, port) = try Self.hostPort(rest, bad)
            self = scheme == "tcp" ? .tcp(host: host, port: port) : .udp(host: host, port: port)
        default:
            throw bad("unknown scheme '\(scheme)' (expected unix, tcp or udp)")
        }
    }

    private static func hostPort(_ s: String, _ bad: (String) -> NetBackendError) throws(NetBackendError) -> (String, UInt16) {
        let host: String
        let portText: Substring
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]") else { throw bad("an IPv6 host needs a closing ']'") }
            host = String(s[s.index(after: s.startIndex)..<close])
            let after = s[s.index(after: close)...]
            guard after.hasPrefix(":") else { throw bad("expected :PORT after ']'") }
            portText = after.dropFirst()
        } else {
            guard let colon = s.lastIndex(of: ":") else { throw bad("expected HOST:PORT") }
            host = String(s[..<colon])
            if host.contains(":") { throw bad("an IPv6 host must be written in brackets, e.g. [::1]:5555") }
            portText = s[s.index(after: colon)...]
        }
        guard !host.isEmpty else { throw bad("the host is empty") }
        guard let port = UInt16(portText) else { throw bad("port '\(portText)' is not a number from 0 to 65535") }
        return (host, port)
    }

    public var isUnix: Bool { if case .unix = self { return true } else { return false } }

    /// Resolves to a kernel socket address (getaddrinfo(3) for host names).
    func resolve() throws(NetBackendError) -> ResolvedSocketAddress {
        switch self {
        case .unix(let path):
            return ResolvedSocketAddress(unixPath: path)
        case .tcp(let host, let port), .udp(let host, let port):
            var hints = addrinfo()
            hints.ai_socktype = self.isTCP ? SocketCall.stream : SocketCall.datagram
            hints.ai_flags = AI_NUMERICSERV
            var result: UnsafeMutablePointer<addrinfo>?
            let rc = getaddrinfo(host, String(port), &hints, &result)
            guard rc == 0, let first = result else {
                throw .deviceGone("cannot resolve '\(host)': \(String(cString: gai_strerror(rc)))")
            }
            defer { freeaddrinfo(result) }
            return ResolvedSocketAddress(copying: first.pointee.ai_addr, length: first.pointee.ai_addrlen)
        }
    }

    private var isTCP: Bool { if case .tcp = self { return true } else { return false } }
}

/// A kernel `sockaddr` of any family, stored inline so it can be passed to sendmsg
/// without allocating.
struct ResolvedSocketAddress: CustomStringConvertible {
    var storage = sockaddr_storage()
    var length: socklen_t = 0

    init() {}

    init(unixPath path: String) {
        var un = sockaddr_un()
        un.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &un.sun_path) { raw in
            let bytes = Array(path.utf8.prefix(raw.count - 1))
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        length = socklen_t(MemoryLayout<sa_family_t>.size + path.utf8.count + 1)
        withUnsafeMutableBytes(of: &storage) { dst in
            withUnsafeBytes(of: un) { src in dst.copyMemory(from: src) }
        }
    }

    init(copying address: UnsafeRawPointer, length: socklen_t) {
        self.length = length
        withUnsafeMutableBytes(of: &storage) { dst in
            dst.baseAddress!.copyMemory(from: address, byteCount: Int(length))
        }
    }

    var family: Int32 { Int32(storage.ss_family) }

    /// Calls `body` with the address as a `sockaddr` pointer and its length.
    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws -> R) rethrows -> R {
        try withUnsafeBytes(of: storage) { raw in
            try body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), length)
        }
    }

    /// Same address and length, byte for byte (how a learned peer is recognised).
    func sameAs(_ other: ResolvedSocketAddress) -> Bool {
        guard length == other.length else { return false }
        return withUnsafeBytes(of: storage) { a in
            withUnsafeBytes(of: other.storage) { b in memcmp(a.baseAddress!, b.baseAddress!, Int(length)) == 0 }
        }
    }

    /// Text for log lines: `PATH` (or `unnamed`), `IP:PORT`, `[IP6]:PORT`.
    var description: String {
        switch family {
        case AF_UNIX:
            let pathBytes = Int(length) - MemoryLayout<sa_family_t>.size
            guard pathBytes > 0 else { return "unnamed unix socket" }
            return withUnsafeBytes(of: storage) { raw in
                let p = raw.baseAddress!.advanced(by: MemoryLayout<sa_family_t>.size).assumingMemoryBound(to: UInt8.self)
                if p[0] == 0 { return "@" + String(decoding: UnsafeBufferPointer(start: p + 1, count: pathBytes - 1), as: UTF8.self) }
                return String(cString: p)
            }
        case AF_INET, AF_INET6:
            var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            var serv = [CChar](repeating: 0, count: Int(NI_MAXSERV))
            let rc = withSockaddr { sa, len in
                getnameinfo(sa, len, &host, socklen_t(host.count), &serv, socklen_t(serv.count), NI_NUMERICHOST | NI_NUMERICSERV)
            }
            guard rc == 0 else { return "?" }
            let h = String(nulTerminated: host), s = String(nulTerminated: serv)
            return family == AF_INET6 ? "[\(h)]:\(s)" : "\(h):\(s)"
        default:
            return "family \(family)"
        }
    }
}
