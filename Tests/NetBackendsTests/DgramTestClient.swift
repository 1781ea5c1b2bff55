import CNetBackends
import Foundation

/// A unix datagram socket bound at a path of its own, as a VMM or vfkit would hold.
final class RawDgramClient {
    let fd: Int32
    let path: String

    init(boundAt path: String) throws {
        self.path = path
        unlink(path)
        fd = socket(AF_UNIX, cnb_SOCK_DGRAM, 0)
        guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
        var a = Self.address(path)
        let ok = withUnsafePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
        }
        if !ok { let e = errno; close(fd); throw TestFailure("bind \(path): \(String(cString: strerror(e)))") }
        var tv = timeval(tv_sec: 0, tv_usec: 300_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit {
        close(fd)
        unlink(path)
    }

    static func address(_ path: String) -> sockaddr_un {
        var a = sockaddr_un()
        a.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &a.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        return a
    }

    func send(_ bytes: [UInt8], to path: String) throws {
        var a = Self.address(path)
        let n = withUnsafePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, 0, sa, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
        }
        guard n == bytes.count else { throw TestFailure("sendto \(path): \(String(cString: strerror(errno)))") }
    }

    /// The next datagram, or nil after 300 ms of silence.
    func receive() -> [UInt8]? {
        var buf = [UInt8](repeating: 0, count: 70_000)
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return n > 0 ? Array(buf[..<n]) : nil
    }

    /// Sends ARP requests for `target` to `path` until a reply comes back here.
    func arpAnswered(by path: String, target: [UInt8], greeting: Bool = false) throws -> Bool {
        if greeting { try send(Array("VFKT".utf8), to: path) }
        for _ in 0..<15 {
            try send(TestFrames.arpRequest(from: [10, 77, 0, 9], for: target), to: path)
            while let f = receive() {
                if TestFrames.isARPReply(f, from: target) { return true }
            }
        }
        return false
    }
}
