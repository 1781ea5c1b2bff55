import CNetBackends
#if canImport(Glibc)
import Glibc
#endif

/// Replacing a dead slirp helper without ever waiting on the event loop's thread (see
/// `SlirpHelperBackend`): its exit comes from its pidfd, the new one is spawned on
/// `SlirpHelperSpawner`'s thread, its handshake is read when its socket is readable, and
/// back-off, deadlines and grace periods are one-shot timers. Everything here runs on
/// the loop thread.
extension SlirpHelperBackend {
    /// Watches `h`'s pidfd: readable once the process exited.
    func watchExit(of h: SlirpHelperProcess) throws(NetBackendError) {
        exitSource?.cancel()
        do {
            exitSource = try eventLoop.watch(fd: h.pidfd, name: "slirp helper \(h.pid) exit") { [weak self] _ in
                self?.helperExited()
            }
        } catch {
            throw .system(error)
        }
        exitSource?.enable(.read)
    }

    func helperExited() {
        // Reaped by someone else (a SIGCHLD handler of the embedding program) counts as
        // exited with an unknown status: the pidfd stays readable and must be dropped.
        guard let h = helper else { return }
        let status = h.reap(blocking: false)
        guard h.isReaped else { return }
        exitSource?.cancel()
        exitSource = nil
        switch phase {
        case .running:
            // Frames it sent before dying still wait in the socket: read them to its end
            // of file (`peerGone`), unless nothing reads it within a second.
            phase = .exited(status)
            armTimer(milliseconds: 1000) { [weak self] in
                guard let self, case .exited = self.phase else { return }
                self.detach()
                self.died(status, how: nil)
            }
        case .dying, .starting:
            died(status, how: nil)
        default:
            break
        }
    }

    /// Logs the death and restarts after the back-off, or gives up (stops the loop with
    /// `.deviceGone`: netbe exits 1).
    func died(_ status: Int32?, how: String?) {
        cancelTimer()
        handshakeSource?.cancel()
        handshakeSource = nil
        exitSource?.cancel()
        exitSource = nil
        let pid = helper?.pid ?? helperPID
        helper?.closeSocket()
        helper = nil
        log.error("slirp helper (pid \(pid)) \(how ?? SlirpHelperProcess.describe(status: status)); restarting it")
        switch restartBudget.recordDeath() {
        case .giveUp(let deaths):
            phase = .stopped
            // The loop's caller reports it (netbe logs it and exits 1).
            let why = "slirp helper died \(deaths) times within \(restartBudget.seconds) s; giving up"
            eventLoop.stop(throwing: NetBackendError.deviceGone(why))
        case .restart(let delay):
            phase = .waiting
            if delay == 0 {
                startReplacement()
            } else {
                armTimer(milliseconds: delay) { [weak self] in self?.startReplacement() }
            }
        }
    }

    func startReplacement() {
        guard case .waiting = phase else { return }
        let loop = eventLoop
        SlirpHelperProcess.startInBackground(executable: program, specText: spec.text) { [weak self] result in
            loop.execute { [weak self] in
                guard let self else {
                    if case .success(let h) = result { h.kill(); h.reap(blocking: true) }
                    return
                }
                self.spawned(result)
            }
        }
    }

    func spawned(_ result: Result<SlirpHelperProcess, NetBackendError>) {
        let h: SlirpHelperProcess
        switch result {
        case .failure(let error):
            guard case .waiting = phase else { return }
            died(nil, how: "could not be restarted (\(error))")
            return
        case .success(let process):
            h = process
        }
        guard case .waiting = phase else {
            // Closed meanwhile.
            h.kill()
            h.reap(blocking: true)
            return
        }
        helper = h
        helperPID = h.pid
        phase = .starting
        do {
            try watchExit(of: h)
            handshakeSource = try eventLoop.watch(fd: h.fd, name: "slirp helper \(h.pid) handshake") { [weak self] _ in
                self?.handshakeReadable()
            }
            handshakeSource?.enable(.read)
        } catch {
            h.kill()
            h.reap(blocking: true)
            died(nil, how: "could not be watched (\(error))")
            return
        }
        armTimer(milliseconds: 15_000) { [weak self] in
            self?.log.error("slirp helper (pid \(h.pid)) did not start within 15 s")
            h.kill()
        }
    }

    func handshakeReadable() {
        guard case .starting = phase, let h = helper else { return }
        let answer: SlirpHelperProcess.Handshake
        do {
            answer = try h.readHandshake()
        } catch {
            log.error("slirp helper (pid \(h.pid)): \(error)")
            answer = .closed
            h.kill()
        }
        switch answer {
        case .nothingYet:
            return
        case .closed:
            // Dying: its pidfd says when, and `helperExited` goes on from there.
            handshakeSource?.cancel()
            handshakeSource = nil
            h.closeSocket()
            armTimer(milliseconds: 1000) { [weak self] in self?.helper?.kill() }
        case .ready:
            handshakeSource?.cancel()
            handshakeSource = nil
            cancelTimer()
            helperDrops = helperDrops.map { _ in 0 }   // a new helper counts from zero
            do throws(NetBackendError) {
                try attach(fd: h.takeSocket())
                phase = .running
                try tellFeatures(waiting: false)
            } catch {
                log.error("slirp helper (pid \(h.pid)): \(error)")
                h.kill()
                return
            }
            restarts += 1
            log.notice("slirp helper restarted (pid \(h.pid)); traffic resumes")
        }
    }

    func armTimer(milliseconds: Int, _ action: @escaping @Sendable () -> Void) {
        cancelTimer()
        timer = try? eventLoop.addTimer(name: "slirp helper", intervalMilliseconds: milliseconds) { [weak self] in
            self?.cancelTimer()
            action()
        }
        if timer == nil {
            // No timer descriptor left: act now rather than never.
            action()
        }
    }

    func cancelTimer() {
        timer?.cancel()
        timer = nil
    }
}
