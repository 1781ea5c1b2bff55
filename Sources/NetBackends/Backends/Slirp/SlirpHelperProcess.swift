import CNetBackends
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Starting and stopping the slirp helper process: this program re-executed with the
/// hidden `slirp-helper` subcommand, its end of a SOCK_SEQPACKET socketpair as fd 3.
///
/// Start-up handshake (first message from the helper, before any frame; frames are
/// never shorter than 14 bytes so the two cannot be confused):
/// - `R`: libslirp is up, port forwards bound, privileges dropped;
/// - `E<status digit><message>`: it failed; status as CONTRACT.md (2 bad spec, 3 unavailable).
///
/// The process is held by a pidfd, taken right after the spawn while it is our unreaped
/// child: its exit makes the pidfd readable (an event loop can watch it), and signals and
/// reaping go through it, so a pid the kernel has handed to another process after the
/// helper was reaped elsewhere is never signalled.
final class SlirpHelperProcess: @unchecked Sendable {
    let pid: pid_t
    /// Our end of the socketpair, non-blocking; -1 once handed over or closed.
    private(set) var fd: Int32
    /// The process's pidfd, open until this value goes away (an event source may watch it).
    let pidfd: Int32
    /// Reaped (by `reap`), or found already reaped by someone else.
    private(set) var isReaped = false

    static let readyMessage: UInt8 = UInt8(ascii: "R")
    static let errorMessage: UInt8 = UInt8(ascii: "E")
    static let helperFD: Int32 = 3

    private init(pid: pid_t, fd: Int32, pidfd: Int32) {
        self.pid = pid
        self.fd = fd
        self.pidfd = pidfd
    }

    deinit {
        if fd >= 0 { _ = Glibc.close(fd) }
        _ = Glibc.close(pidfd)
    }

    /// Spawns the helper for `specText` and waits (at most 15 s) for its handshake.
    /// Blocks the caller: for opening the backend, not for an event loop's thread.
    static func start(executable: String, specText: String) throws(NetBackendError) -> SlirpHelperProcess {
        let helper = try SlirpHelperSpawner.shared.run { () -> Result<SlirpHelperProcess, NetBackendError> in
            do throws(NetBackendError) { return .success(try spawn(executable: executable, specText: specText)) } catch { return .failure(error) }
        }.get()
        do throws(NetBackendError) {
            var p = pollfd(fd: helper.fd, events: Int16(POLLIN), revents: 0)
            var r: Int32
            repeat { r = poll(&p, 1, 15_000) } while r < 0 && errno == EINTR
            if r == 0 { throw .deviceGone("slirp helper (pid \(helper.pid)) did not start within 15 s") }
            switch try helper.readHandshake() {
            case .ready: break
            case .nothingYet: throw .deviceGone("slirp helper (pid \(helper.pid)) sent nothing")
            case .closed:
                let how = describe(status: helper.reap(blocking: true))
                throw .deviceGone("slirp helper (pid \(helper.pid)) \(how) before it was ready")
            }
        } catch {
            helper.terminate()
            throw error
        }
        return helper
    }

    /// Spawns the helper (on the spawner thread, see `SlirpHelperSpawner`) without
    /// waiting for its handshake; `done` gets the process, or why it could not start,
    /// on the spawner thread. Nothing here waits on the caller's thread.
    static func startInBackground(executable: String, specText: String,
                                  done: @escaping @Sendable (Result<SlirpHelperProcess, NetBackendError>) -> Void) {
        SlirpHelperSpawner.shared.submit {
            do throws(NetBackendError) { done(.success(try spawn(executable: executable, specText: specText))) } catch { done(.failure(error)) }
        }
    }

    /// socketpair, posix_spawn, pidfd_open; our end is made non-blocking.
    private static func spawn(executable: String, specText: String) throws(NetBackendError) -> SlirpHelperProcess {
        var pair: [Int32] = [-1, -1]
        if socketpair(AF_UNIX, SocketCall.seqpacket | SocketCall.cloexec, 0, &pair) < 0 {
            throw .system(SystemCallError(call: "socketpair", device: "slirp helper", errno: errno))
        }
        let ours = pair[0], theirs = pair[1]
        let args = SlirpHelper.Invocation(fd: helperFD, parent: getpid(), spec: specText).arguments(program: executable)
        let pid: pid_t
        do {
            pid = try spawn(executable, args, passing: theirs)
        } catch {
            _ = Glibc.close(ours)
            _ = Glibc.close(theirs)
            throw error
        }
        _ = Glibc.close(theirs)
        // Still our unreaped child, so the pid cannot name another process yet.
        let pidfd = cnb_pidfd_open(pid)
        if pidfd < 0 {
            let e = errno
            _ = Glibc.close(ours)
            _ = Glibc.kill(pid, SIGKILL)   // unreaped: still ours
            var status: Int32 = 0
            _ = waitpid(pid, &status, 0)
            throw .system(SystemCallError(call: "pidfd_open \(pid)", device: "slirp helper", errno: e))
        }
        _ = fcntl(ours, F_SETFL, fcntl(ours, F_GETFL) | O_NONBLOCK)
        _ = fcntl(pidfd, F_SETFD, FD_CLOEXEC)
        return SlirpHelperProcess(pid: pid, fd: ours, pidfd: pidfd)
    }

    /// posix_spawn with `fd` as the child's fd 3, an empty signal mask (netbe blocks
    /// SIGINT/SIGTERM for its signalfd) and its own process group, so that a terminal's
    /// Ctrl-C reaches only netbe, which then stops the helper itself.
    private static func spawn(_ path: String, _ args: [String], passing fd: Int32) throws(NetBackendError) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // dup2 onto the same number also clears close-on-exec (glibc >= 2.29).
        posix_spawn_file_actions_adddup2(&actions, fd, helperFD)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP))
        let cArgs = args.map { strdup($0) }
        defer { cArgs.forEach { free($0) } }
        var argv = cArgs + [nil]
        var pid: pid_t = 0
        let r = posix_spawn(&pid, path, &actions, &attributes, &argv, environ)
        if r != 0 {
            throw .system(SystemCallError(call: "posix_spawn \(path)", device: "slirp helper", errno: r))
        }
        return pid
    }

    enum Handshake {
        case ready
        case nothingYet
        /// It closed the socket before answering: it is dying (watch `pidfd`).
        case closed
    }

    /// Reads the handshake without waiting. Throws the helper's error (status as
    /// CONTRACT.md) or `.deviceGone` for a message that is not a handshake.
    func readHandshake() throws(NetBackendError) -> Handshake {
        var buffer = [UInt8](repeating: 0, count: 1024)
        let n = recv(fd, &buffer, buffer.count, cnb_MSG_DONTWAIT)
        if n < 0 && (errno == EAGAIN || errno == EINTR) { return .nothingYet }
        if n <= 0 { return .closed }
        if buffer[0] == Self.readyMessage { return .ready }
        guard buffer[0] == Self.errorMessage, n >= 2 else {
            throw .deviceGone("slirp helper (pid \(pid)) sent an unexpected first message")
        }
        let message = String(decoding: buffer[2..<n], as: UTF8.self)
        switch buffer[1] {
        case UInt8(ascii: "2"): throw .badSpec(message)
        case UInt8(ascii: "3"): throw .unavailable(message)
        default: throw .deviceGone("slirp helper: \(message)")
        }
    }

    /// Hands our end of the socket to its new owner (which closes it from then on).
    func takeSocket() -> Int32 {
        let f = fd
        fd = -1
        return f
    }

    /// Closes our end, if we still own it: the helper sees end of file and exits.
    func closeSocket() {
        if fd >= 0 { _ = Glibc.close(fd) }
        fd = -1
    }

    /// Reaps the helper through its pidfd: the raw wait status, or nil while it runs
    /// (`blocking` false) or when it was reaped already (by us, or by someone else).
    @discardableResult
    func reap(blocking: Bool) -> Int32? {
        guard !isReaped else { return nil }
        var status: Int32 = 0
        let r = cnb_pidfd_wait(pidfd, blocking ? 0 : 1, &status)
        if r == 0 { return nil }
        isReaped = true
        return r == 1 ? status : nil
    }

    /// SIGKILL through the pidfd: never reaches a process that merely got the same pid.
    func kill() {
        if !isReaped { _ = cnb_pidfd_send_signal(pidfd, SIGKILL) }
    }

    /// Closes our end (the helper sees end of file and exits), gives it half a second
    /// (waiting on the pidfd), then kills it; always reaps it. Blocks: for closing the
    /// backend, never from a restart.
    func terminate() {
        closeSocket()
        guard !isReaped else { return }
        var p = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
        var r: Int32
        repeat { r = poll(&p, 1, 500) } while r < 0 && errno == EINTR
        if r == 0 { kill() }
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
