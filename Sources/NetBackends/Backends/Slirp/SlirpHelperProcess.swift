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
struct SlirpHelperProcess {
    let pid: pid_t
    /// Our end of the socketpair, non-blocking.
    let fd: Int32

    static let readyMessage: UInt8 = UInt8(ascii: "R")
    static let errorMessage: UInt8 = UInt8(ascii: "E")
    static let helperFD: Int32 = 3

    /// Spawns the helper for `specText` and waits (at most 15 s) for its handshake.
    static func start(executable: String, specText: String) throws(NetBackendError) -> SlirpHelperProcess {
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
        let helper = SlirpHelperProcess(pid: pid, fd: ours)
        do {
            try helper.awaitHandshake()
        } catch {
            helper.terminate()
            throw error
        }
        _ = fcntl(ours, F_SETFL, fcntl(ours, F_GETFL) | O_NONBLOCK)
        return helper
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

    private func awaitHandshake() throws(NetBackendError) {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        var r: Int32
        repeat { r = poll(&p, 1, 15_000) } while r < 0 && errno == EINTR
        if r == 0 { throw .deviceGone("slirp helper (pid \(pid)) did not start within 15 s") }
        var buffer = [UInt8](repeating: 0, count: 1024)
        let n = recv(fd, &buffer, buffer.count, 0)
        if n <= 0 {
            let how = SlirpHelperProcess.describe(status: reap(blocking: true))
            throw .deviceGone("slirp helper (pid \(pid)) \(how) before it was ready")
        }
        if buffer[0] == Self.readyMessage { return }
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

    /// Waits for the helper's exit status (it has closed its socket, so it is dying).
    /// Returns the raw wait status, or nil when it was already reaped.
    @discardableResult
    func reap(blocking: Bool) -> Int32? {
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, blocking ? 0 : WNOHANG)
            if r == pid { return status }
            if r < 0 && errno == EINTR { continue }
            return nil
        }
    }

    /// Closes our end (the helper sees end of file and exits), gives it half a second,
    /// then kills it; always reaps it.
    func terminate() {
        _ = Glibc.close(fd)
        for _ in 0..<50 {
            if reap(blocking: false) != nil { return }
            usleep(10_000)
        }
        kill(pid, SIGKILL)
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
