import CNetBackends
import Foundation
import NetBackends
import Testing

/// Lifetimes: work a backend left queued on its loop runs harmlessly after the backend is
/// gone, a stopped relay stays stopped, and a stopped relay and closed backends are freed.
@Suite struct LifetimeTests {
    /// A unix stream listener the test holds, for `stream,connect=`.
    final class Listener {
        let path = TrafficRig.tempPath("life.sock")
        let fd: Int32
        init() throws {
            fd = socket(AF_UNIX, cnb_SOCK_STREAM, 0)
            var a = RawDgramClient.address(path)
            let ok = withUnsafePointer(to: &a) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
            }
            guard ok, listen(fd, 4) == 0 else { throw TestFailure("listen \(path): \(String(cString: strerror(errno)))") }
        }
        deinit { close(fd); unlink(path) }
        func accept() -> Int32 { Glibc.accept(fd, nil, nil) }
    }

    /// A stream backend that buffered more records than its frontend took has asked its
    /// loop to call again; closed and released before the loop ran that, it must not
    /// trap when the loop gets to it.
    @Test func backendReleasedWithWorkQueuedOnItsLoop() throws {
        let listener = try Listener()
        let loop = try NetEventLoop()
        weak var released: NetBackend?
        do {
            let stream = try BackendRegistry.shared.open("stream,connect=unix:\(listener.path)", on: loop)
            let conn = listener.accept()
            defer { close(conn) }
            let frame = TestFrames.arpRequest(from: [10, 9, 0, 2], for: [10, 9, 0, 1])
            var bytes: [UInt8] = []
            for _ in 0..<3 { bytes += [0, 0, 0, UInt8(frame.count)] + frame }
            #expect(bytes.withUnsafeBytes { send(conn, $0.baseAddress, $0.count, 0) } == bytes.count)
            usleep(50_000)
            try stream.setCapabilities([], vnetHeaderLength: 0)
            // The loop does not run yet: this thread is its thread by contract.
            let buffer = FrameBuffer()
            #expect(try stream.receive(into: buffer) == .frame(length: frame.count))   // two more wait in its buffer
            stream.setReceiveHandler {}
            stream.enableReceive()   // queues work on the loop: watch, and call for the buffered two
            stream.close()
            released = stream
        }
        #expect(released == nil, "the closed stream backend is still alive")
        let lt = try LoopThread(loop)
        #expect(try lt.sync { "alive" } == "alive")
        #expect(try lt.stop() == nil)
    }

    /// dgram -> relay -> stream whose peer reads nothing: the relay blocks on the stream.
    /// After `stop()` (from another thread) the stream becoming writable again must not
    /// restart the relay.
    @Test(.timeLimit(.minutes(1)))
    func stoppedRelayStaysStoppedWhenTheSinkDrains() throws {
        let sockPath = TrafficRig.tempPath("stop.sock")
        let local = TrafficRig.tempPath("stop-a")
        let peer = try RawDgramClient(boundAt: TrafficRig.tempPath("stop-b"))
        let loop = try NetEventLoop()
        let a = try BackendRegistry.shared.open("dgram,local=unix:\(local),remote=unix:\(peer.path)", on: loop)
        let b = try BackendRegistry.shared.open("stream,listen=unix:\(sockPath)", on: loop)
        defer { a.close(); b.close() }
        let relay = try Relay(a, b)
        let client = try RawStreamClient(unixPath: sockPath)
        relay.start()
        let lt = try LoopThread(loop)
        defer { _ = try? lt.stop() }
        let payload = [UInt8](repeating: 0x5a, count: 1400)
        let frame = TestFrames.arpRequest(from: [10, 9, 0, 2], for: [10, 9, 0, 1]) + payload
        let flood = FloodThread { [fd = peer.fd] in
            var addr = RawDgramClient.address(local)
            return withUnsafePointer(to: &addr) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                    frame.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, cnb_MSG_DONTWAIT, sa, socklen_t(MemoryLayout<sockaddr_un>.size)) }
                }
            } == frame.count
        }
        defer { flood.stop() }
        // Until the stream's socket is full and the relay holds a frame.
        // Counters are the loop thread's: read them there.
        let frames = { try lt.sync { relay.forward.statistics.frames } }
        var last: UInt64 = 0
        try waitUntil(10, "the relay to block on the stream") {
            usleep(200_000)
            let now = try frames()
            defer { last = now }
            return now > 0 && now == last
        }
        relay.stop()   // from this thread, while the loop runs
        let stoppedAt = try frames()
        // The stream's peer drains everything: the stream turns writable.
        var buf = [UInt8](repeating: 0, count: 65536)
        var drained = 0
        while true {
            let n = recv(client.fd, &buf, buf.count, cnb_MSG_DONTWAIT)
            if n <= 0 { break }
            drained += n
        }
        #expect(drained > 0)
        usleep(500_000)
        let after = try frames()
        #expect(after == stoppedAt, "the stopped relay moved \(after - stoppedAt) more frames once its sink drained")
    }

    /// Handlers hold the relay's directions and the directions hold the backends: a
    /// stopped relay must break that cycle so that everything is freed.
    @Test func stoppedRelayAndClosedBackendsAreFreed() throws {
        let loop = try NetEventLoop()
        let peerA = try RawDgramClient(boundAt: TrafficRig.tempPath("free-pa"))
        let peerB = try RawDgramClient(boundAt: TrafficRig.tempPath("free-pb"))
        weak var relayRef: Relay?
        weak var forwardRef: RelayDirection?
        weak var backwardRef: RelayDirection?
        weak var aRef: NetBackend?
        weak var bRef: NetBackend?
        do {
            let a = try BackendRegistry.shared.open("dgram,local=unix:\(TrafficRig.tempPath("free-a")),remote=unix:\(peerA.path)", on: loop)
            let b = try BackendRegistry.shared.open("dgram,local=unix:\(TrafficRig.tempPath("free-b")),remote=unix:\(peerB.path)", on: loop)
            let relay = try Relay(a, b)
            relay.start()
            relay.stop()
            a.close()
            b.close()
            relayRef = relay
            forwardRef = relay.forward
            backwardRef = relay.backward
            aRef = a
            bRef = b
        }
        #expect(relayRef == nil, "the stopped relay is still alive")
        #expect(forwardRef == nil && backwardRef == nil, "a stopped relay's direction is still alive (held by a handler)")
        #expect(aRef == nil && bRef == nil, "a closed backend of a stopped relay is still alive")
    }
}
