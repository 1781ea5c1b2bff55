#if canImport(Glibc)
import CNetBackends
import Glibc
#endif

/// One passt child: started in the foreground (`-f`) with its end of a unix stream
/// socketpair (`-F FD`, which also makes passt quit when that socket closes: passt(1),
/// "--fd ... implies --one-off"), named by a pidfd so that signals and reaping can only
/// ever reach this child, even after its pid is reused.
final class PasstProcess {
    let pid: pid_t
    /// Readable once the child has exited (pidfd_open(2)).
    let pidfd: Int32
    private var reaped = false

    private init(pid: pid_t, pidfd: Int32) {
        self.pid = pid
        self.pidfd = pidfd
    }

    deinit { if pidfd >= 0 { Glibc.close(pidfd) } }

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
        guard socketpair(AF_UNIX, cnb_SOCK_STREAM | cnb_SOCK_CLOEXEC, 0, &pair) == 0 else {
            throw .system(SystemCallError(call: "socketpair", device: "passt", errno: errno))
        }
        defer { Glibc.close(pair[1]) }   // passt holds its end; ours would keep EOF away
        // passt enlarges the buffers of a socket it accepts itself, not of one handed in
        // with -F: give both ends 4 MiB, as the helper socket of `slirp` has.
        for fd in pair {
            _ = try? SocketCall.requestBuffer(fd, send: true, size: 4 << 20, device: "passt socketpair")
            _ = try? SocketCall.requestBuffer(fd, send: false, size: 4 << 20, device: "passt socketpair")
        }
        var ready: [Int32] = [-1, -1]
        if awaitReady {
            guard pipe(&ready) == 0 else {
                let e = errno
                Glibc.close(pair[0])
                throw .system(SystemCallError(call: "pipe", device: "passt", errno: e))
            }
            _ = fcntl(ready[0], F_SETFD, FD_CLOEXEC)
            _ = fcntl(ready[1], F_SETFD, FD_CLOEXEC)
            // passt opens its PID file after dropping to nobody (when started as root).
            _ = fchmod(ready[1], 0o622)
        }
        defer { if ready[0] >= 0 { Glibc.close(ready[0]) } }
        var args = [executable, "-f", "-q", "-F", String(pair[1])] + arguments
        if awaitReady { args += ["-P", "/proc/self/fd/\(ready[1])"] }
        let pid: pid_t
        do throws(NetBackendError) {
            pid = try spawn(executable, args, passing: [pair[1]] + (awaitReady ? [ready[1]] : []))
        } catch {
            Glibc.close(pair[0])
            if ready[1] >= 0 { Glibc.close(ready[1]) }
            throw error
        }
        if ready[1] >= 0 { Glibc.close(ready[1]) }
        let pidfd = cnb_pidfd_open(pid)
        guard pidfd >= 0 else {
            let e = errno
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            Glibc.close(pair[0])
            throw .system(SystemCallError(call: "pidfd_open", device: "passt (pid \(pid))", errno: e))
        }
        let process = PasstProcess(pid: pid, pidfd: pidfd)
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

    /// posix_spawn with `fds` inherited under their own numbers, stdout onto stderr (nothing
    /// but `ready` may reach netbe's stdout before it), an empty signal mask (netbe blocks
    /// SIGINT/SIGTERM for its signalfd), default SIGPIPE, and a process group of its own so
    /// that a terminal's Ctrl-C reaches only netbe, which then stops passt itself.
    private static func spawn(_ path: String, _ args: [String], passing fds: [Int32]) throws(NetBackendError) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // dup2 onto the same number clears close-on-exec (glibc >= 2.29).
        for fd in fds { posix_spawn_file_actions_adddup2(&actions, fd, fd) }
        posix_spawn_file_actions_adddup2(&actions, 2, 1)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGPIPE)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))
        let cArgs = args.map { strdup($0) }
        defer { cArgs.forEach { free($0) } }
        var argv = cArgs + [nil]
        var pid: pid_t = 0
        let r = posix_spawn(&pid, path, &actions, &attributes, &argv, environ)
        if r != 0 { throw .system(SystemCallError(call: "posix_spawn \(path)", device: "passt", errno: r)) }
        return pid
    }

    private func awaitPidFile(_ fd: Int32) throws(NetBackendError) {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        var r: Int32
        repeat { r = poll(&p, 1, 10_000) } while r < 0 && errno == EINTR
        if r == 0 { throw .deviceGone("passt (pid \(pid)) was not ready within 10 s") }
        var byte: UInt8 = 0
        if read(fd, &byte, 1) == 1 { return }
        let how = Self.describe(status: reap(blocking: true))
        throw .deviceGone("passt (pid \(pid)) \(how) before it was ready (its messages are above)")
    }

    /// The child's wait status once it has exited (nil while it runs, or if reaped already).
    func reap(blocking: Bool) -> Int32? {
        guard !reaped else { return nil }
        var status: Int32 = 0
        let r = cnb_pidfd_wait(pidfd, blocking ? 0 : 1, &status)
        if r == 1 { reaped = true; return status }
        if r < 0 { reaped = true }
        return nil
    }

    /// Signals this child only (pidfd_send_signal(2)); nothing once it has been reaped.
    func signal(_ sig: Int32) {
        guard !reaped else { return }
        _ = cnb_pidfd_send_signal(pidfd, sig)
    }

    /// SIGTERM, a second to go, then SIGKILL; always reaped. Used when netbe stops (its
    /// socket is closed first, so passt is normally gone already).
    func terminate() {
        guard !reaped else { return }
        signal(SIGTERM)
        var p = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
        if poll(&p, 1, 1000) <= 0 { signal(SIGKILL) }
        _ = reap(blocking: true)
    }

    /// "exited with status N" or "was killed by signal N (NAME)".
    static func describe(status: Int32?) -> String {
        guard let s = status else { return "exited" }
        let signal = s & 0x7f
        if signal == 0 { return "exited with status \((s >> 8) & 0xff)" }
        return "was killed by signal \(signal) (\(String(cString: strsignal(signal))))"
    }
}
