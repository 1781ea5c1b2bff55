import CNetBackends
import Foundation
import NetBackends
import Testing

/// No swallowed errors: a failure found while flushing a relay batch ends `netbe connect`
/// as the contract says, and an epoll_ctl failure surfaces instead of silently leaving a
/// source unwatched.
@Suite struct SwallowedErrorTests {
    /// A `connect=` stream without `reconnect=` whose peer stops taking data: the relay's
    /// small frames are gathered and written at the end of the batch (`flush`), so the
    /// failure (EPIPE) is seen there first. netbe must exit 1 (CONTRACT.md: peer gone
    /// without reconnect), not keep running with the peer dropped.
    @Test(.timeLimit(.minutes(1)))
    func peerGoneDuringFlushEndsConnectWithStatusOne() throws {
        let sockPath = TrafficRig.tempPath("flush.sock")
        let listener = socket(AF_UNIX, cnb_SOCK_STREAM, 0)
        defer { close(listener); unlink(sockPath) }
        var a = RawDgramClient.address(sockPath)
        let bound = withUnsafePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
        }
        #expect(bound && listen(listener, 4) == 0)
        let local = TrafficRig.tempPath("flush-a")
        let peer = try RawDgramClient(boundAt: TrafficRig.tempPath("flush-b"))
        let netbe = try NetbeBinary.start(["connect", "dgram,local=unix:\(local),remote=unix:\(peer.path)",
                                           "stream,connect=unix:\(sockPath)"])
        defer { _ = try? netbe.stop(SIGKILL) }
        let conn = accept(listener, nil, nil)
        #expect(conn >= 0)
        defer { close(conn) }
        // The peer will read nothing more: netbe's next write fails with EPIPE, while its
        // read side stays quiet (the peer may still send).
        #expect(shutdown(conn, Int32(SHUT_RD)) == 0)
        for _ in 0..<5 {
            try peer.send(TestFrames.arpRequest(from: [10, 9, 0, 2], for: [10, 9, 0, 1]), to: local)
        }
        let status = try netbe.wait(seconds: 5)
        #expect(status == 1, "netbe exited \(status); stderr: \(netbe.stderr)")
        #expect(netbe.stderr.contains("reconnect"), "no error line naming the gone peer: \(netbe.stderr)")
    }

    /// A descriptor epoll refuses (a regular file: EPERM): enabling it must not silently
    /// leave it unwatched; the loop's `run()` throws an error naming epoll_ctl.
    @Test func epollCtlFailureIsNotSilent() throws {
        let path = TrafficRig.tempPath("regular")
        FileManager.default.createFile(atPath: path, contents: Data([1, 2, 3]))
        defer { unlink(path) }
        let fd = open(path, O_RDONLY)
        #expect(fd >= 0)
        let loop = try NetEventLoop()
        let lt = try LoopThread(loop)
        let source = try loop.watch(fd: fd, name: "regular file", ownsDescriptor: true) { _ in }
        defer { source.cancel() }
        source.enable(.read)
        let error = try lt.join(seconds: 3)
        #expect("\(error.map { "\($0)" } ?? "none")".contains("epoll_ctl"), "run() ended with \(String(describing: error))")
    }
}
