import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Keeps one passt child serving the stream backend it belongs to: watches the child's
/// pidfd on the event loop, logs a death, and starts a new passt on a timer (never
/// blocking the loop), handing netbe's new socket end to the stream, within the slirp
/// helper's `RestartBudget` (5 deaths in 10 s, then netbe exits 1). Stops the child when
/// the backend closes.
final class PasstSupervisor: StreamPeerOwner, @unchecked Sendable {

    let executable: String
    let arguments: [String]
    let loop: NetEventLoop
    /// The backend this child serves; it owns the supervisor (StreamPeerOwner), so weak.
    weak var stream: StreamBackend?
    var log: Logger { stream?.logger ?? loop.logger }

    private var process: PasstProcess?
    private var exitSource: EventSource?
    private var restartTimer: EventSource?
    private var budget = RestartBudget(deaths: 5, seconds: 10)
    private var closing = false

    init(executable: String, arguments: [String], loop: NetEventLoop) {
        self.executable = executable
        self.arguments = arguments
        self.loop = loop
    }

    /// Takes over a child just started, watching for its exit.
    func adopt(_ p: PasstProcess) throws(NetBackendError) {
        process = p
        do {
            exitSource = try loop.watch(fd: p.pidfd, name: "passt pid \(p.pid)") { [weak self] _ in self?.childExited() }
        } catch {
            throw .system(error)
        }
        exitSource?.enable(.read)
    }

    static func peerName(_ p: PasstProcess) -> String { "passt (pid \(p.pid))" }

    private func childExited() {
        guard let p = process else { return }
        exitSource?.cancel()
        exitSource = nil
        process = nil
        let how = PasstProcess.describe(status: p.reap(blocking: false))
        // The stream may not have read end of file yet: end the connection now.
        stream?.detachFromHandler("passt \(how)", badInput: false)
        switch budget.recordDeath() {
        case .giveUp(let deaths):
            log.error("passt (pid \(p.pid)) \(how); it died \(deaths) times within \(budget.seconds) s, giving up")
            loop.stop(throwing: NetBackendError.deviceGone("passt keeps dying (\(deaths) times within \(budget.seconds) s, last: \(how))"))
        case .restart(let delay):
            log.warning("passt (pid \(p.pid)) \(how); restarting it in \(delay) ms")
            do {
                // A one-shot timer even for 0 ms: the restart never runs inside this handler.
                restartTimer = try loop.addTimer(name: "passt restart", intervalMilliseconds: max(delay, 1)) { [weak self] in self?.restart() }
            } catch {
                loop.stop(throwing: NetBackendError.system(error))
            }
        }
    }

    private func restart() {
        restartTimer?.cancel()
        restartTimer = nil
        guard !closing, let stream else { return }
        do throws(NetBackendError) {
            let (p, fd) = try PasstProcess.start(executable: executable, arguments: arguments, awaitReady: false)
            do throws(NetBackendError) { try adopt(p) } catch {
                Glibc.close(fd)
                p.terminate()
                throw error
            }
            try stream.attach(fd: fd, peer: Self.peerName(p))
            log.warning("passt restarted (pid \(p.pid)); traffic resumes")
        } catch {
            loop.stop(throwing: error)
        }
    }

    // MARK: StreamPeerOwner

    /// The connection ended from our side (bad input) or passt closed it: passt quits on
    /// end of file by itself (`-F` implies one-off); SIGTERM makes sure. Its pidfd then
    /// brings the restart.
    func streamPeerLeft(_ why: String) {
        process?.signal(SIGTERM)
    }

    func streamClosing() {
        closing = true
        restartTimer?.cancel()
        restartTimer = nil
        exitSource?.cancel()
        exitSource = nil
        process?.terminate()
        process = nil
    }
}
