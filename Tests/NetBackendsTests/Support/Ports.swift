import CNetBackends
import Foundation

/// A socket bound to 127.0.0.1 on a port the kernel picked: (descriptor, port).
/// The caller closes it (or listens on it, to hold the port).
func bindLoopback(udp: Bool = false) throws -> (fd: Int32, port: Int) {
    let fd = socket(AF_INET, udp ? cnb_SOCK_DGRAM : cnb_SOCK_STREAM, 0)
    guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &a) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
    }
    guard ok else {
        let e = errno
        close(fd)
        throw TestFailure("bind 127.0.0.1:0: \(String(cString: strerror(e)))")
    }
    return (fd, Int(UInt16(bigEndian: a.sin_port)))
}

/// A port on 127.0.0.1 that was free a moment ago.
func freeLoopbackPort(udp: Bool = false) throws -> Int {
    let (fd, port) = try bindLoopback(udp: udp)
    close(fd)
    return port
}
