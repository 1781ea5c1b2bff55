import CNetBackends
import Foundation
import Glibc
import NetBackends

/// A `vxlan` backend on loopback (UDP GRO on, so one read may hold several frames) and a
/// plain UDP socket playing the remote VTEP: each datagram is an RFC 7348 header (I flag,
/// VNI 42) and the rig's frame.
final class VxlanTrafficRig: TrafficRig {
    let peerFD: Int32
    let datagram: [UInt8]
    var target = sockaddr_in()
    private var flood: FloodThread?

    init(loop: NetEventLoop) throws {
        let local = try freeLoopbackPort(udp: true), remote = try freeLoopbackPort(udp: true)
        let fd = socket(AF_INET, cnb_SOCK_DGRAM | cnb_SOCK_NONBLOCK | cnb_SOCK_CLOEXEC, 0)
        peerFD = fd
        guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
        var me = sockaddr_in()
        me.sin_family = sa_family_t(AF_INET)
        me.sin_port = UInt16(remote).bigEndian
        me.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let bound = withUnsafePointer(to: &me) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw TestFailure("bind 127.0.0.1:\(remote): \(String(cString: strerror(errno)))") }
        target.sin_family = sa_family_t(AF_INET)
        target.sin_port = UInt16(local).bigEndian
        target.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        datagram = [0x08, 0, 0, 0, 0, 0, 42, 0] + TrafficRig.frame
        super.init(backend: try BackendRegistry.shared.open(
            "vxlan,vni=42,local=udp:127.0.0.1:\(local),remote=udp:127.0.0.1:\(remote),gro=on", on: loop))
    }

    deinit { Glibc.close(peerFD) }

    private static func sendOne(_ fd: Int32, _ datagram: [UInt8], _ to: sockaddr_in) -> Bool {
        var to = to
        return withUnsafePointer(to: &to) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                datagram.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, cnb_MSG_DONTWAIT, sa, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        } == datagram.count
    }

    override func burst(_ count: Int, _ lt: LoopThread) throws {
        for _ in 0..<count {
            guard Self.sendOne(peerFD, datagram, target) else { throw TestFailure("sendto: \(String(cString: strerror(errno)))") }
        }
    }

    override func startFlood(_ lt: LoopThread) throws {
        let fd = peerFD, d = datagram, to = target
        flood = FloodThread { Self.sendOne(fd, d, to) }
    }

    override func stopFlood() {
        flood?.stop()
        flood = nil
    }
}
