import CNetBackends
import Foundation

/// A client of a stream listener written with plain socket calls, playing a VMM (or
/// a broken one): it writes raw bytes and reads `[u32 big-endian length][frame]` records.
final class RawStreamClient {
    let fd: Int32

    init(unixPath path: String) throws {
        fd = socket(AF_UNIX, cnb_SOCK_STREAM, 0)
        guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
        var a = sockaddr_un()
        a.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &a.sun_path) { raw in
            raw.copyBytes(from: Array(path.utf8))
        }
        let ok = withUnsafePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
        }
        if !ok { let e = errno; close(fd); throw TestFailure("connect \(path): \(String(cString: strerror(e)))") }
        var tv = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    func write(_ bytes: [UInt8]) throws {
        let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, cnb_MSG_NOSIGNAL) }
        guard n == bytes.count else { throw TestFailure("send: \(n) of \(bytes.count): \(String(cString: strerror(errno)))") }
    }

    func sendFrame(_ frame: [UInt8]) throws {
        let n = UInt32(frame.count)
        try write([UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)] + frame)
    }

    private func readExactly(_ count: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = out.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + got, count - got, 0) }
            if n <= 0 { return nil }
            got += n
        }
        return out
    }

    /// The next frame, or nil after about a second of silence or at end of stream.
    func readFrame() -> [UInt8]? {
        guard let h = readExactly(4) else { return nil }
        let n = Int(h[0]) << 24 | Int(h[1]) << 16 | Int(h[2]) << 8 | Int(h[3])
        return readExactly(n)
    }

    /// True when the peer closed the connection (recv returns 0).
    func peerClosed(seconds: Double = 5) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        var b: UInt8 = 0
        while Date() < deadline {
            let n = recv(fd, &b, 1, 0)
            if n == 0 { return true }
            if n < 0 && errno != EAGAIN && errno != EWOULDBLOCK { return true }
        }
        return false
    }
}

/// Ethernet frames the tests hand-build: ARP (RFC 826) for one IPv4 address.
enum TestFrames {
    static let clientMAC: [UInt8] = [0x02, 0, 0, 0, 0, 0x09]

    static func arpRequest(from ip: [UInt8], for target: [UInt8], mac: [UInt8] = clientMAC) -> [UInt8] {
        let eth: [UInt8] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff] + mac + [0x08, 0x06]
        let arp: [UInt8] = [0, 1, 8, 0, 6, 4, 0, 1] + mac + ip + [0, 0, 0, 0, 0, 0] + target
        return eth + arp + [UInt8](repeating: 0, count: 18)
    }

    static func isARPReply(_ f: [UInt8], from target: [UInt8]) -> Bool {
        f.count >= 42 && f[12] == 0x08 && f[13] == 0x06 && f[20] == 0 && f[21] == 2 && Array(f[28..<32]) == target
    }
}
