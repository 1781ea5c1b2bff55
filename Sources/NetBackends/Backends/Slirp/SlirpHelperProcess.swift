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
/// The process itself is a `ChildProcess` (held by a pidfd).
final class SlirpHelperProcess: @unchecked Sendable {
    let child: ChildProcess
    var pid: pid_t { child.pid }
    /// Readable once the helper exited (an event source may watch it).
    var pidfd: Int32 { child.pidfd }
    var isReaped: Bool { child.isReaped }
    /// Our end of the socketpair, non-blocking; -1 once handed over or closed.
    private(set) var fd: Int32

    static let readyMessage: UInt8 = UInt8(ascii: "R")
    static let errorMessage: UInt8 = UInt8(ascii: "E")
    static let helperFD: Int32 = 3

    private init(child: ChildProcess, fd: Int32) {
        self.child = child
        self.fd = fd
    }

    deinit {
        if fd >= 0 { _ = Glibc.close(fd) }
    }

    /// Spawns the helper for `specText` and waits (at most 15 s) for its handshake.
    /// Blocks the caller: for opening the backend, not for an event loop's thread.
    static func start(executable: String, specText: String) throws(NetBackendError) -> SlirpHelperProcess {
        let helper = try SlirpHelperSpawner.shared.run { () -> Result<SlirpHelperProcess, NetBackendError> in
            do throws(NetBackendError) { return .success(try spawn(executable: executable, specText: specText)) } catch { return .failure(error) }
        }.get()
        do throws(NetBackendError) {
            let answered: Bool
            do { answered = try Syscall.poll(helper.fd, POLLIN, milliseconds: 15_000, device: "slirp helper (pid \(helper.pid))") } catch { throw .system(error) }
            if !answered { throw .deviceGone("slirp helper (pid \(helper.pid)) did not start within 15 s") }
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

    /// socketpair, then the helper with its end as fd 3; our end is made non-blocking.
    private static func spawn(executable: String, specText: String) throws(NetBackendError) -> SlirpHelperProcess {
        let ours: Int32, theirs: Int32
        do { (ours, theirs) = try SocketCall.pair(type: SocketCall.seqpacket, device: "slirp helper") } catch { throw .system(error) }
        defer { _ = Glibc.close(theirs) }   // the helper holds its own copy
        let args = SlirpHelper.Invocation(fd: helperFD, parent: getpid(), spec: specText).arguments(program: executable)
        let child: ChildProcess
        do {
            // SIGPIPE stays as netbe has it: the helper is netbe, which ignores it.
            child = try ChildProcess.spawn(executable, arguments: args, name: "slirp helper",
                                           descriptors: [(theirs, helperFD)], defaultSIGPIPE: false)
        } catch {
            _ = Glibc.close(ours)
            throw .system(error)
        }
        _ = fcntl(ours, F_SETFL, fcntl(ours, F_GETFL) | O_NONBLOCK)
        return SlirpHelperProcess(child: child, fd: ours)
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

    /// The raw wait status once the helper exited; nil while it runs or if reaped already.
    @discardableResult
    func reap(blocking: Bool) -> Int32? { child.reap(blocking: blocking) }

    /// SIGKILL through the pidfd: never reaches a process that merely got the same pid.
    func kill() { child.signal(SIGKILL) }

    /// Closes our end (the helper sees end of file and exits), gives it half a second,
    /// then kills it; always reaps it. Blocks: for closing the backend, never from a restart.
    func terminate() {
        closeSocket()
        child.terminate(first: nil, grace: 500)
    }

    static func describe(status: Int32?) -> String { ChildProcess.describe(status: status) }
}
