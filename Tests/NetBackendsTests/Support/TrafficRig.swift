import CNetBackends
import Foundation
import Glibc
import NetBackends
import Testing

/// One way to run a backend kind here with a real peer that makes frames arrive for it:
/// what the receive-contract harnesses (ReceiveDisableTests, StrandedFrameTests) need to
/// drive every kind the same way. A kind the registry lists as runnable here and that
/// has no recipe below makes those harnesses fail, naming it.
struct TrafficCase: Sendable, CustomTestStringConvertible, CustomStringConvertible {
    /// The variant, e.g. "slirp-helper".
    let name: String
    /// The registry kind it exercises; nil for a backend that is not a registered kind.
    let kind: String?
    /// True when the registry lists a runnable kind this file has no recipe for.
    var missing = false

    var testDescription: String { name }
    var description: String { name }

    /// Recipes by registry kind name (one kind may be run several ways).
    static let recipes: [String: [TrafficCase]] = [
        "tap": [TrafficCase(name: "tap", kind: "tap")],
        "stream": [TrafficCase(name: "stream", kind: "stream")],
        "dgram": [TrafficCase(name: "dgram", kind: "dgram")],
        "slirp": [TrafficCase(name: "slirp-helper", kind: "slirp"), TrafficCase(name: "slirp-inprocess", kind: "slirp")],
        // Without /dev/netmap the kind's kernel path cannot open; its frame logic runs
        // over shared rings instead (NetmapTrafficRig).
        "netmap": [TrafficCase(name: "netmap-shared", kind: "netmap")],
        "passt": [TrafficCase(name: "passt", kind: "passt")],
        "vxlan": [TrafficCase(name: "vxlan", kind: "vxlan")],
        "vale": [TrafficCase(name: "vale", kind: "vale")],
        "null": [TrafficCase(name: "null-generate", kind: "null")],
        "vhost-user": [TrafficCase(name: "vhost-user", kind: "vhost-user")],
    ]

    /// Every kind `BackendRegistry.shared` can open here, each way it can run, plus the
    /// generic seqpacket transport (a base class, not a registered kind).
    static var all: [TrafficCase] {
        var out: [TrafficCase] = []
        for kind in BackendRegistry.shared.kinds {
            if case .unavailable = kind.availability() { continue }
            out += recipes[kind.name] ?? [TrafficCase(name: "\(kind.name) (no recipe)", kind: kind.name, missing: true)]
        }
        return out + [TrafficCase(name: "seqpacket", kind: nil)]
    }

    /// Opens the backend with its peer on `loop` (before the loop runs).
    func open(on loop: NetEventLoop) throws -> TrafficRig {
        if missing {
            throw TestFailure("backend kind '\(kind ?? name)' is registered and runnable here but has no traffic recipe: add one to Tests/NetBackendsTests/Support/TrafficRig.swift")
        }
        switch name {
        case "tap": return try TapTrafficRig(loop: loop)
        case "stream": return try StreamTrafficRig(loop: loop)
        case "dgram": return try DgramTrafficRig(loop: loop)
        case "slirp-helper": return try SlirpTrafficRig(loop: loop, helper: true)
        case "slirp-inprocess": return try SlirpTrafficRig(loop: loop, helper: false)
        case "seqpacket": return try SeqpacketTrafficRig(loop: loop)
        case "netmap-shared": return try NetmapTrafficRig(loop: loop)
        case "passt": return try SlirpTrafficRig(loop: loop, spec: "passt,net=10.0.2.0/24,ipv6=off")
        case "vxlan": return try VxlanTrafficRig(loop: loop)
        case "vale": return try ValeTrafficRig(loop: loop)
        case "null-generate": return try NullTrafficRig(loop: loop)
        case "vhost-user": return try VhostUserTrafficRig(loop: loop)
        default: throw TestFailure("no recipe named \(name)")
        }
    }
}

/// A backend and a peer that sends to it. Subclasses fill in the peer.
class TrafficRig {
    let backend: NetBackend
    init(backend: NetBackend) { self.backend = backend }

    /// Makes `count` frames arrive for the backend, at once (the loop runs in `lt`).
    func burst(_ count: Int, _ lt: LoopThread) throws { fatalError("override") }
    /// Keeps frames arriving until `stopFlood`.
    func startFlood(_ lt: LoopThread) throws { fatalError("override") }
    func stopFlood() {}
    /// Something that replaces the backend's descriptor under it (a helper restart).
    func disturb(_ lt: LoopThread) throws {}
    /// What a failed expectation should also print: the peer's state, if the rig has one.
    var diagnostics: String { "" }

    /// Stops the peer and closes the backend.
    func close() {
        stopFlood()
        backend.close()
    }

    static let frame: [UInt8] = TestFrames.arpRequest(from: [10, 9, 0, 2], for: [10, 9, 0, 1])

    static func tempPath(_ tag: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("nbt-\(tag)-\(UUID().uuidString.prefix(8))").path
    }
}

/// A thread writing with `write` (non-blocking) until stopped; EAGAIN waits a little.
final class FloodThread: @unchecked Sendable {
    private let stopped = Locked(false)
    private let done = DispatchSemaphore(value: 0)

    init(_ write: @escaping @Sendable () -> Bool) {
        let stopped = self.stopped, done = self.done
        Thread {
            while !stopped.current {
                if !write() { usleep(100) }
            }
            done.signal()
        }.start()
    }

    func stop() {
        stopped.withLock { $0 = true }
        _ = done.wait(timeout: .now() + 5)
    }
}

/// A tap in a namespace; the namespace sends UDP to a static neighbour behind the tap.
final class TapTrafficRig: TrafficRig {
    let ns: TestNamespace
    private var flood: TestProcess?

    init(loop: NetEventLoop) throws {
        try requireDebianPython()
        ns = try TestNamespace("rig")
        try ns.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        let tap = try BackendRegistry.shared.open("tap0,netns=\(ns.name)", on: loop)
        super.init(backend: tap)
        try ns.address("tap0", "10.67.0.1/24")
        try sh("ip", "-n", ns.name, "neigh", "add", "10.67.0.2", "lladdr", "02:00:00:00:00:02", "dev", "tap0")
    }

    private func python(_ body: String) -> [String] {
        [debianPython, "-c", "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n" + body]
    }

    override func burst(_ count: Int, _ lt: LoopThread) throws {
        try sh(["ip", "netns", "exec", ns.name] + python("for i in range(\(count)): s.sendto(b'x' * 64, ('10.67.0.2', 9))"))
    }

    override func startFlood(_ lt: LoopThread) throws {
        flood = try ns.spawn(python("while True:\n    try: s.sendto(b'x' * 64, ('10.67.0.2', 9))\n    except OSError: pass"))
    }

    override func stopFlood() {
        _ = try? flood?.stop(SIGKILL)
        flood = nil
    }

    override func close() {
        super.close()
        ns.delete()
    }
}

/// `stream,listen=unix:PATH` and a client writing records.
final class StreamTrafficRig: TrafficRig {
    let path = TrafficRig.tempPath("rig.sock")
    private var client: RawStreamClient?
    private var flood: FloodThread?

    init(loop: NetEventLoop) throws {
        super.init(backend: try BackendRegistry.shared.open("stream,listen=unix:\(path)", on: loop))
        client = try RawStreamClient(unixPath: path)   // waits in the backlog until the loop accepts
    }

    override func burst(_ count: Int, _ lt: LoopThread) throws {
        var bytes: [UInt8] = []
        for _ in 0..<count { bytes += [0, 0, 0, UInt8(Self.frame.count)] + Self.frame }
        try client!.write(bytes)
    }

    override func startFlood(_ lt: LoopThread) throws {
        let fd = client!.fd
        var record: [UInt8] = []
        for _ in 0..<16 { record += [0, 0, 0, UInt8(Self.frame.count)] + Self.frame }
        let bytes = record
        flood = FloodThread {
            bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, cnb_MSG_DONTWAIT | cnb_MSG_NOSIGNAL) } == bytes.count
        }
    }

    override func stopFlood() {
        flood?.stop()
        flood = nil
    }

    override func close() {
        super.close()
        client = nil
    }
}

/// `dgram,local=unix:A,remote=unix:B` and a socket at B sending to A.
final class DgramTrafficRig: TrafficRig {
    let local = TrafficRig.tempPath("rig-a")
    let peer: RawDgramClient
    private var flood: FloodThread?

    init(loop: NetEventLoop) throws {
        let remote = TrafficRig.tempPath("rig-b")
        peer = try RawDgramClient(boundAt: remote)
        super.init(backend: try BackendRegistry.shared.open("dgram,local=unix:\(local),remote=unix:\(remote)", on: loop))
    }

    private static func sendOne(_ fd: Int32, to path: String) -> Bool {
        var a = RawDgramClient.address(path)
        return withUnsafePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                frame.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, cnb_MSG_DONTWAIT, sa, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
        } == frame.count
    }

    override func burst(_ count: Int, _ lt: LoopThread) throws {
        for _ in 0..<count {
            guard Self.sendOne(peer.fd, to: local) else { throw TestFailure("sendto \(local): \(String(cString: strerror(errno)))") }
        }
    }

    override func startFlood(_ lt: LoopThread) throws {
        let fd = peer.fd, to = local
        flood = FloodThread { Self.sendOne(fd, to: to) }
    }

    override func stopFlood() {
        flood?.stop()
        flood = nil
    }
}

/// libslirp, in a helper or in-process, or passt in slirp's layout: each answers ARP
/// requests for its gateway, which the rig sends from the loop thread (the only thread
/// that may call `send`).
final class SlirpTrafficRig: TrafficRig {
    static let guestMAC: [UInt8] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]
    let request = Frames.arpRequest(senderMAC: guestMAC, senderIP: [10, 0, 2, 15], targetIP: [10, 0, 2, 2])
    let helper: Bool
    private var timer: EventSource?

    init(loop: NetEventLoop, helper: Bool) throws {
        self.helper = helper
        if helper { SlirpHelperBackend.executable = try NetbeBinary.path }
        super.init(backend: try BackendRegistry.shared.open("slirp,helper=\(helper ? "on" : "off")", on: loop))
    }

    /// Another kind that answers as slirp does (passt with `net=10.0.2.0/24`).
    init(loop: NetEventLoop, spec: String) throws {
        helper = false
        super.init(backend: try BackendRegistry.shared.open(spec, on: loop))
    }

    override func burst(_ count: Int, _ lt: LoopThread) throws {
        let request = self.request, b = backend
        try lt.sync {
            request.withUnsafeBytes { f in for _ in 0..<count { _ = try? b.send(f, more: true) } }
            try? b.flush()
        }
    }

    override func startFlood(_ lt: LoopThread) throws {
        let request = self.request, b = backend
        timer = try lt.loop.addTimer(name: "slirp rig", intervalMilliseconds: 1) {
            request.withUnsafeBytes { f in for _ in 0..<8 { _ = try? b.send(f, more: true) } }
            try? b.flush()
        }
    }

    override func stopFlood() {
        timer?.cancel()
        timer = nil
    }

    /// Kills the helper (our own child, by its pid): the backend starts another on a new socket.
    override func disturb(_ lt: LoopThread) throws {
        guard helper, let h = backend as? SlirpHelperBackend else { return }
        kill(try lt.sync { h.helperPID }, SIGKILL)   // the loop thread's to read
    }
}

/// The generic seqpacket transport on one end of a socketpair; the test writes the other.
final class SeqpacketTrafficRig: TrafficRig {
    let peerFD: Int32
    private var flood: FloodThread?

    init(loop: NetEventLoop) throws {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, cnb_SOCK_SEQPACKET, 0, &fds) == 0 else {
            throw TestFailure("socketpair: \(String(cString: strerror(errno)))")
        }
        _ = fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK)
        peerFD = fds[1]
        let spec = try BackendSpec(parsing: "seqpacket")
        super.init(backend: try SeqpacketBackend(spec: spec, kind: "seqpacket", name: "seqpacket test", fd: fds[0], eventLoop: loop))
    }

    private static func sendOne(_ fd: Int32) -> Bool {
        frame.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, cnb_MSG_DONTWAIT | cnb_MSG_NOSIGNAL) } == frame.count
    }

    override func burst(_ count: Int, _ lt: LoopThread) throws {
        for _ in 0..<count {
            guard Self.sendOne(peerFD) else { throw TestFailure("send: \(String(cString: strerror(errno)))") }
        }
    }

    override func startFlood(_ lt: LoopThread) throws {
        let fd = peerFD
        flood = FloodThread { Self.sendOne(fd) }
    }

    override func stopFlood() {
        flood?.stop()
        flood = nil
    }

    override func close() {
        super.close()
        Glibc.close(peerFD)
    }
}
