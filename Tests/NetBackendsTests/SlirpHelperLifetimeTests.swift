import CNetBackends
import Foundation
import NetBackends
import Testing

/// The slirp helper's lifetime: it dies with netbe whoever netbe runs as and whichever
/// thread started it, netbe's loop keeps running while it is replaced, netbe never
/// signals a process that is no longer its helper, and a helper that keeps dying ends
/// netbe with status 1.
@Suite(.serialized) struct SlirpHelperLifetimeTests {
    /// A helper whose socket never reaches end of file (netbe's end of it lives on in
    /// another process, as a leaked descriptor would) can only be ended by
    /// PR_SET_PDEATHSIG. Its own privilege drop clears that setting: it must set it again.
    @Test func helperDiesWithNetbeThatDroppedRootEvenWhenItsSocketStaysOpen() throws {
        let net = try SlirpNetwork(helper: true, extra: ["--user", "nobody"])
        let helper = try #require(net.helperPID(), "no helper process under netbe \(net.netbe.pid)")
        defer { kill(helper, SIGKILL) }
        #expect(processUID(net.netbe.pid) != 0)
        let held = try SocketsHeld(of: net.netbe.pid)
        defer { held.close() }
        net.netbe.signal(SIGKILL)
        try waitUntil(1, "the helper \(helper) to die with netbe") { !processAlive(helper) }
    }

    /// The same for a helper started after a restart (from wherever netbe starts it).
    @Test func restartedHelperDiesWithNetbe() throws {
        let net = try SlirpNetwork(helper: true, extra: ["--user", "nobody"])
        let first = try #require(net.helperPID())
        kill(first, SIGKILL)
        try waitUntil(10, "netbe to report the restart") { net.netbe.stderr.contains("slirp helper restarted") }
        let second = try #require(net.helperPID())
        defer { kill(second, SIGKILL) }
        #expect(second != first)
        // The spawner thread dropped root with the rest of netbe (setuid applies to every
        // thread): the new helper was never root.
        let nobody = Int(try sh("id", "-u", "nobody").trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(processUID(second) == nobody)
        let tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(net.netbe.pid)/task")
        #expect(tasks.allSatisfy { processUID(net.netbe.pid, task: $0) == nobody }, "a netbe thread kept another uid")
        let held = try SocketsHeld(of: net.netbe.pid)
        defer { held.close() }
        net.netbe.signal(SIGKILL)
        try waitUntil(1, "the restarted helper \(second) to die with netbe") { !processAlive(second) }
    }

    /// PR_SET_PDEATHSIG fires when the *thread* that started the child exits: a helper
    /// opened from a short-lived thread (a VMM's set-up thread) must outlive that thread.
    @Test func helperOpenedOnAShortLivedThreadOutlivesTheThread() throws {
        try requireRoot()
        SlirpHelperBackend.executable = try NetbeBinary.path
        let loop = try NetEventLoop()
        let opened = Locked<SlirpHelperBackend?>(nil)
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            opened.withLock { $0 = try? BackendRegistry.shared.open("slirp", on: loop) as? SlirpHelperBackend }
            done.signal()
        }
        thread.start()
        #expect(done.wait(timeout: .now() + 20) == .success)
        let backend = try #require(opened.current, "the slirp backend did not open")
        defer { backend.close() }
        let helper = backend.helperPID
        // The thread has returned; give its exit (and a parent-death signal) time to land.
        usleep(500_000)
        #expect(processAlive(helper), "the helper \(helper) died with the thread that started it")
    }

    /// Replacing a dead helper happens beside the traffic, not instead of it: a timer on
    /// the same loop keeps firing while a helper that takes 1 s to start is awaited.
    @Test func restartDoesNotStallTheLoop() throws {
        try requireRoot()
        let slow = try SlowHelperScript(delay: 1.0)
        SlirpHelperBackend.executable = slow.path
        defer { SlirpHelperBackend.executable = nil }
        let runner = try LoopThread()
        let loop = runner.loop
        let backend = try #require(try BackendRegistry.shared.open("slirp", on: loop) as? SlirpHelperBackend)
        defer { backend.close() }
        let ticks = Locked<[Double]>([])
        let timer = try loop.addTimer(name: "ticks", intervalMilliseconds: 10) {
            ticks.withLock { $0.append(Date().timeIntervalSince1970) }
        }
        defer { timer.cancel() }
        let frame = FrameBuffer()
        backend.setReceiveHandler {
            while true {
                do {
                    if case .empty = try backend.receive(into: frame) { return }
                } catch {
                    loop.stop(throwing: error)
                    return
                }
            }
        }
        backend.enableReceive()
        let first = try runner.sync { backend.helperPID }
        usleep(200_000)
        let killedAt = Date().timeIntervalSince1970
        kill(first, SIGKILL)
        try waitUntil(15, "the helper to be restarted") { try runner.sync { backend.restarts } == 1 }
        let restartedAt = Date().timeIntervalSince1970
        let during = ticks.current.filter { $0 >= killedAt - 0.05 && $0 <= restartedAt }
        let gaps = zip(during.dropFirst(), during).map { $0 - $1 }
        let worst = gaps.max() ?? (restartedAt - killedAt)
        #expect(restartedAt - killedAt >= 0.9, "the slow helper started too fast to tell")
        print("restart: helper replaced in \(Int((restartedAt - killedAt) * 1000)) ms; longest gap between 10 ms ticks \(Int(worst * 1000)) ms")
        let at = during.first.map { Int(($0 - killedAt) * 1000) } ?? -1
        #expect(worst < 0.35, "the loop stalled \(Int(worst * 1000)) ms while the helper restarted (first tick at \(at) ms, \(during.count) ticks, \(Int((restartedAt - killedAt) * 1000)) ms)")
        backend.disableReceive()
    }

    /// A helper that died and was reaped by someone else leaves a pid that the kernel may
    /// hand to any process: stopping the backend must not signal that process.
    @Test func stoppingNeverSignalsAReusedPid() throws {
        try requireRoot()
        SlirpHelperBackend.executable = try NetbeBinary.path
        let loop = try NetEventLoop()   // not running: nothing notices the death before close
        let backend = try #require(try BackendRegistry.shared.open("slirp", on: loop) as? SlirpHelperBackend)
        let helper = backend.helperPID
        kill(helper, SIGKILL)
        var status: Int32 = 0
        #expect(waitpid(helper, &status, 0) == helper)
        let innocent = try #require(try processWithPID(helper), "could not get pid \(helper) again for a bystander")
        defer {
            kill(innocent, SIGKILL)
            waitpid(innocent, &status, 0)
        }
        backend.close()
        #expect(processAlive(innocent), "closing the backend killed pid \(helper), which is no longer its helper")
    }

    /// More than five deaths within ten seconds: netbe gives up, says so and exits 1.
    @Test func helperThatKeepsDyingEndsNetbeWithStatus1() throws {
        let net = try SlirpNetwork(helper: true)
        var killed: Set<Int32> = []
        try waitUntil(20, "netbe to give up on the helper") {
            if !net.netbe.isRunning { return true }
            if let pid = net.helperPID(), !killed.contains(pid) {
                killed.insert(pid)
                kill(pid, SIGKILL)
            }
            return false
        }
        #expect(net.netbe.process.terminationStatus == 1)
        #expect(net.netbe.stderr.contains("giving up"), "\(net.netbe.stderr)")
    }
}

/// Copies of every socket descriptor of `pid` (pidfd_getfd), so that its sockets outlive it.
final class SocketsHeld {
    private var fds: [Int32] = []

    init(of pid: Int32) throws {
        let pidfd = cnb_pidfd_open(pid)
        guard pidfd >= 0 else { throw TestFailure("pidfd_open \(pid): \(String(cString: strerror(errno)))") }
        defer { _ = Glibc.close(pidfd) }
        let entries = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")
        for e in entries {
            guard let n = Int32(e),
                  let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(e)"),
                  target.hasPrefix("socket:") else { continue }
            let copy = cnb_pidfd_getfd(pidfd, n)
            if copy >= 0 { fds.append(copy) }
        }
        if fds.isEmpty { throw TestFailure("no socket of pid \(pid) could be copied") }
    }

    func close() {
        for fd in fds { _ = Glibc.close(fd) }
        fds = []
    }
}

/// Whether `pid` exists and is not a zombie (State: Z in /proc/PID/status).
func processAlive(_ pid: Int32) -> Bool {
    guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = s.split(separator: "\n").first(where: { $0.hasPrefix("State:") }) else { return false }
    return !line.contains("Z") && !line.contains("X")
}

/// Starts `sleep 5` as `pid` (the kernel's ns_last_pid, as CRIU restores pids), retrying
/// while other processes or threads take the number first; nil when it never worked.
/// posix_spawn directly: Foundation's Process may start threads, which take pids too.
func processWithPID(_ pid: Int32) throws -> Int32? {
    let argv: [UnsafeMutablePointer<CChar>?] = [strdup("sleep"), strdup("5"), nil]
    defer { argv.forEach { free($0) } }
    for _ in 0..<50 {
        try String(pid - 1).write(toFile: "/proc/sys/kernel/ns_last_pid", atomically: false, encoding: .utf8)
        var child: pid_t = 0
        guard posix_spawn(&child, "/bin/sleep", nil, nil, argv, environ) == 0 else { continue }
        if child == pid { return child }
        kill(child, SIGKILL)
        var status: Int32 = 0
        waitpid(child, &status, 0)
    }
    return nil
}

/// A wrapper that runs netbe after a delay: a helper that is slow to start.
final class SlowHelperScript {
    let path: String

    init(delay: Double) throws {
        let netbe = try NetbeBinary.path
        path = FileManager.default.temporaryDirectory.appendingPathComponent("nbt-slow-helper-\(UUID().uuidString.prefix(8))").path
        try "#!/bin/sh\nsleep \(delay)\nexec '\(netbe)' \"$@\"\n".write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o755)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}
