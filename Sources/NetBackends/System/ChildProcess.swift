import CNetBackends
#if canImport(Glibc)
import Glibc
#endif

/// A program this process started (the slirp helper, passt), held by a pidfd taken right
/// after the spawn, while it is still our unreaped child and its pid cannot name anyone
/// else (pidfd_open(2)). Its exit makes the pidfd readable, so an event loop can watch
/// it; signals and reaping go through the pidfd, so a pid reused after someone else
/// reaped the child is never signalled.
final class ChildProcess: @unchecked Sendable {
    let pid: pid_t
    /// Open until this value goes away (an event source may watch it).
    let pidfd: Int32
    /// What logs and errors call it: "passt", "slirp helper".
    let name: String
    /// Reaped by `reap`, or found reaped already by someone else.
    private(set) var isReaped = false

    private init(pid: pid_t, pidfd: Int32, name: String) {
        self.pid = pid
        self.pidfd = pidfd
        self.name = name
    }

    deinit { _ = Glibc.close(pidfd) }

    /// posix_spawn with each `descriptors` pair's first descriptor as the child's second,
    /// stdout onto stderr (nothing but `ready` may reach netbe's stdout before it), an
    /// empty signal mask (netbe blocks SIGINT/SIGTERM for its signalfd), SIGPIPE back to
    /// its default when `defaultSIGPIPE`, and a process group of its own so that a
    /// terminal's Ctrl-C reaches only netbe, which then stops the child itself.
    static func spawn(_ path: String, arguments: [String], name: String,
                      descriptors: [(Int32, Int32)], defaultSIGPIPE: Bool) throws(SystemCallError) -> ChildProcess {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // dup2, even onto the same number, clears close-on-exec (glibc >= 2.29).
        for (from, to) in descriptors { posix_spawn_file_actions_adddup2(&actions, from, to) }
        posix_spawn_file_actions_adddup2(&actions, 2, 1)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP
        var defaults = sigset_t()
        sigemptyset(&defaults)
        if defaultSIGPIPE {
            sigaddset(&defaults, SIGPIPE)
            posix_spawnattr_setsigdefault(&attributes, &defaults)
            flags |= POSIX_SPAWN_SETSIGDEF
        }
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(flags))
        let cArgs = arguments.map { strdup($0) }
        defer { cArgs.forEach { free($0) } }
        var argv = cArgs + [nil]
        var pid: pid_t = 0
        let r = posix_spawn(&pid, path, &actions, &attributes, &argv, environ)
        if r != 0 { throw SystemCallError(call: "posix_spawn \(path)", device: name, errno: r) }
        let pidfd = cnb_pidfd_open(pid)
        if pidfd < 0 {
            let e = errno
            _ = Glibc.kill(pid, SIGKILL)   // unreaped: still ours
            var status: Int32 = 0
            _ = waitpid(pid, &status, 0)
            throw SystemCallError(call: "pidfd_open \(pid)", device: name, errno: e)
        }
        return ChildProcess(pid: pid, pidfd: pidfd, name: name)
    }

    /// The raw wait status once the child has exited; nil while it runs (`blocking`
    /// false) or when it was reaped already (by us, or by someone else).
    @discardableResult
    func reap(blocking: Bool) -> Int32? {
        guard !isReaped else { return nil }
        var status: Int32 = 0
        let r = cnb_pidfd_wait(pidfd, blocking ? 0 : 1, &status)
        if r == 0 { return nil }
        isReaped = true
        return r == 1 ? status : nil
    }

    /// Signals this child only (pidfd_send_signal(2)); nothing once it has been reaped.
    func signal(_ sig: Int32) {
        if !isReaped { _ = cnb_pidfd_send_signal(pidfd, sig) }
    }

    /// True once the child has exited, waiting at most `milliseconds` for it.
    func awaitExit(milliseconds: Int32) -> Bool {
        if isReaped { return true }
        return (try? Syscall.poll(pidfd, POLLIN, milliseconds: milliseconds, device: name)) ?? true
    }

    /// `first` (if any), `grace` milliseconds to go, then SIGKILL; always reaped. Blocks:
    /// for closing a backend, never from a restart.
    func terminate(first: Int32?, grace milliseconds: Int32) {
        guard !isReaped else { return }
        if let first { signal(first) }
        if !awaitExit(milliseconds: milliseconds) { signal(SIGKILL) }
        reap(blocking: true)
    }

    /// "exited with status N" or "was killed by signal N (NAME)".
    static func describe(status: Int32?) -> String {
        guard let s = status else { return "exited" }
        let signal = s & 0x7f
        if signal == 0 { return "exited with status \((s >> 8) & 0xff)" }
        return "was killed by signal \(signal) (\(String(cString: strsignal(signal))))"
    }
}
