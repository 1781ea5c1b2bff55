#if canImport(Glibc)
import CNetBackends
import Glibc
#endif

/// One passt child: started in the foreground (`-f`) with its end of a unix stream
/// socketpair (`-F FD`, which also makes passt quit when that socket closes: passt(1),
/// "--fd ... implies --one-off"); the process itself is a `ChildProcess` (a pidfd).
final class PasstProcess {
    let child: ChildProcess
    var pid: pid_t { child.pid }
    /// Readable once the child has exited.
    var pidfd: Int32 { child.pidfd }

    private init(child: ChildProcess) {
        self.child = child
    }

    /// The `passt` program on PATH, or nil.
    static func locate() -> String? {
        let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") where !dir.isEmpty {
            let candidate = "\(dir)/passt"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    static let missing = "no 'passt' program on PATH: install the Debian package passt (apt-get install passt)"

    /// Starts passt and returns it with netbe's end of the socketpair (non-blocking).
    /// With `awaitReady`, waits (at most 10 s) until passt has bound its forwards and
    /// entered its loop: it writes its PID file then (`-P`), here a pipe back to us, so an
    /// early failure is reported before `ready`. A restart does not wait (never blocks the
    /// event loop): frames sent meanwhile wait in the socket.
    static func start(executable: String, arguments: [String], awaitReady: Bool) throws(NetBackendError) -> (PasstProcess, Int32) {
        var pair: [Int32] = [-1, -1]
        do { (pair[0], pair[1]) = try SocketCall.pair(type: SocketCall.stream, device: "passt") } catch { throw .system(error) }
        defer { Glibc.close(pair[1]) }   // passt holds its end; ours would keep EOF away
        // passt enlarges the buffers of a socket it accepts itself, not of one handed in
        // with -F: give both ends 4 MiB, as the helper socket of `slirp` has.
        for fd in pair {
            _ = try? SocketCall.requestBuffer(fd, send: true, size: 4 << 20, device: "passt socketpair")
            _ = try? SocketCall.requestBuffer(fd, send: false, size: 4 << 20, device: "passt socketpair")
        }
        var ready: [Int32] = [-1, -1]
        if awaitReady {
            do throws(SystemCallError) {
                try Syscall.check("pipe", device: "passt") { pipe(&ready) }
                for fd in ready { try Syscall.check("fcntl F_SETFD", device: "passt") { fcntl(fd, F_SETFD, FD_CLOEXEC) } }
            } catch {
                Glibc.close(pair[0])
                for fd in ready where fd >= 0 { Glibc.close(fd) }
                throw .system(error)
            }
            // passt opens its PID file after dropping to nobody (when started as root).
            _ = fchmod(ready[1], 0o622)
        }
        defer { if ready[0] >= 0 { Glibc.close(ready[0]) } }
        var args = [executable, "-f", "-q", "-F", String(pair[1])] + arguments
        if awaitReady { args += ["-P", "/proc/self/fd/\(ready[1])"] }
        let passed = [pair[1]] + (awaitReady ? [ready[1]] : [])
        let child: ChildProcess
        do {
            child = try ChildProcess.spawn(executable, arguments: args, name: "passt",
                                           descriptors: passed.map { ($0, $0) }, defaultSIGPIPE: true)
        } catch {
            Glibc.close(pair[0])
            if ready[1] >= 0 { Glibc.close(ready[1]) }
            throw .system(error)
        }
        if ready[1] >= 0 { Glibc.close(ready[1]) }
        let process = PasstProcess(child: child)
        if awaitReady {
            do throws(NetBackendError) { try process.awaitPidFile(ready[0]) } catch {
                process.terminate()
                Glibc.close(pair[0])
                throw error
            }
        }
        _ = fcntl(pair[0], F_SETFL, fcntl(pair[0], F_GETFL) | O_NONBLOCK)
        return (process, pair[0])
    }

    private func awaitPidFile(_ fd: Int32) throws(NetBackendError) {
        let answered: Bool
        do { answered = try Syscall.poll(fd, POLLIN, milliseconds: 10_000, device: "passt (pid \(pid)) PID file pipe") } catch { throw .system(error) }
        if !answered { throw .deviceGone("passt (pid \(pid)) was not ready within 10 s") }
        var byte: UInt8 = 0
        if read(fd, &byte, 1) == 1 { return }
        let how = Self.describe(status: reap(blocking: true))
        throw .deviceGone("passt (pid \(pid)) \(how) before it was ready (its messages are above)")
    }

    /// The child's wait status once it has exited (nil while it runs, or if reaped already).
    func reap(blocking: Bool) -> Int32? { child.reap(blocking: blocking) }

    /// Signals this child only; nothing once it has been reaped.
    func signal(_ sig: Int32) { child.signal(sig) }

    /// SIGTERM, a second to go, then SIGKILL; always reaped. Used when netbe stops (its
    /// socket is closed first, so passt is normally gone already).
    func terminate() { child.terminate(first: SIGTERM, grace: 1000) }

    static func describe(status: Int32?) -> String { ChildProcess.describe(status: status) }
}
