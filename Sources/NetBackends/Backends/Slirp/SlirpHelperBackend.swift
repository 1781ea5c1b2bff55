import CNetBackends
import CSlirp
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// The `slirp` backend as the main process sees it with `helper=on`: a seqpacket
/// socket to a helper process that runs libslirp with dropped privileges (bhyve's
/// design). When the helper dies, the death is logged and a new helper is started
/// with the same spec; frames sent meanwhile are dropped as `no_peer`, and TCP in the
/// guest retransmits. Connections the old helper had NATed are lost with it.
///
/// A restart never waits on the event loop's thread: the helper's exit is learnt from
/// its pidfd (watched by the loop), the new helper is spawned on `SlirpHelperSpawner`'s
/// thread, its handshake is read when its socket is readable, and back-off is a timer.
/// The first restart is immediate, the next ones within `restartLimit`'s window wait
/// 100, 200, 400, 800 ms; more deaths than the limit within the window end the loop
/// with `.deviceGone` (netbe exits 1).
public final class SlirpHelperBackend: SeqpacketBackend, @unchecked Sendable {
    /// The program re-executed as the helper; it must understand the hidden
    /// `slirp-helper` subcommand (netbe does). Defaults to this process's own binary.
    nonisolated(unsafe) public static var executable: String?

    /// How many helper deaths within how many seconds are tolerated before giving up:
    /// 5 in 10 s, or `NETBE_SLIRP_RESTART_LIMIT=DEATHS/SECONDS` from the environment.
    nonisolated(unsafe) public static var restartLimit: (deaths: Int, seconds: Int) = {
        if let text = getenv("NETBE_SLIRP_RESTART_LIMIT").map({ String(cString: $0) }) {
            let parts = text.split(separator: "/").compactMap { Int($0) }
            if parts.count == 2, parts[0] >= 0, parts[1] > 0 { return (parts[0], parts[1]) }
        }
        return (5, 10)
    }()

    public let configuration: SlirpConfiguration
    /// The helper's process id (changes when it is restarted).
    public internal(set) var helperPID: pid_t
    /// How many times the helper was restarted.
    public internal(set) var restarts = 0
    /// The current helper process: running, starting or dying.
    var helper: SlirpHelperProcess?
    var phase = Phase.running
    /// Watches the helper's pidfd (its exit), and while it starts its socket (handshake).
    var exitSource: EventSource?
    var handshakeSource: EventSource?
    /// One-shot: back-off, handshake deadline, or grace before SIGKILL.
    var timer: EventSource?
    let program: String
    var restartBudget: RestartBudget
    /// The helper's drop totals last heard (after send, then before receive, by reason).
    var helperDrops = [UInt64](repeating: 0, count: 2 * DropReason.allCases.count)
    var log: Logger { logger }

    enum Phase {
        /// Attached and relaying.
        case running
        /// Its pidfd said it exited; its socket is read to the end first (status kept).
        case exited(Int32?)
        /// Its socket was closed; waiting for its exit on the pidfd.
        case dying
        /// Waiting for the back-off timer, or for the spawner thread.
        case waiting
        /// Spawned, handshake not read yet.
        case starting
        case stopped
    }

    public init(spec: BackendSpec, configuration: SlirpConfiguration, eventLoop: NetEventLoop) throws(NetBackendError) {
        self.configuration = configuration
        // Resolved now: after a privilege drop /proc/self/exe may no longer be readable.
        program = Self.executable ?? Self.ownExecutable()
        restartBudget = RestartBudget(deaths: Self.restartLimit.deaths, seconds: Self.restartLimit.seconds)
        let h = try SlirpHelperProcess.start(executable: program, specText: spec.text)
        helper = h
        helperPID = h.pid
        do {
            try super.init(spec: spec, kind: "slirp", name: "slirp helper", fd: h.takeSocket(),
                           linkHeaderLength: VirtioNetHeader.mergeableLength, eventLoop: eventLoop)
            try watchExit(of: h)
        } catch {
            h.terminate()
            throw error
        }
        log.info("slirp helper started (pid \(h.pid))")
    }

    deinit { stopHelper() }

    /// The helper takes and gives what the in-process stack does (see `SlirpBackend`).
    public override var capabilities: VirtioNetFeatures { SlirpBackend.offloads }
    public override var supportedHeaderLengths: [Int] { [0, 10, 12] }

    /// What the helper may put in the frames it sends: nothing but plain frames unless
    /// the frontend takes a header (at 0 the link header is stripped here).
    private var helperFeatures: VirtioNetFeatures = []

    public override func configure(features: VirtioNetFeatures, vnetHeaderLength length: Int) throws(NetBackendError) -> Int {
        helperFeatures = length > 0 ? features : []
        try tellFeatures()
        return length
    }

    /// Sends the helper its `SlirpHelperLink.featuresMessage` (at start-up, on every
    /// renegotiation and to a restarted helper). The message is tiny and the socket's
    /// buffer large, so waiting for room (at most a second) is only ever a formality;
    /// a restarted helper's socket is empty, and there it is never waited for.
    func tellFeatures(waiting: Bool = true) throws(NetBackendError) {
        guard fd >= 0 else { return }
        var message = SlirpHelperLink.featuresMessage(helperFeatures)
        let n = message.count
        for _ in 0..<(waiting ? 100 : 1) {
            let result = message.withUnsafeMutableBytes { b in
                Result { () throws(SystemCallError) -> IOResult in
                    try Syscall.send(fd, b.baseAddress, n, flags: cnb_MSG_DONTWAIT | cnb_MSG_NOSIGNAL, device: "slirp helper socket")
                }
            }
            switch result {
            case .failure(let error):
                throw .system(SystemCallError(call: "send (offload settings)", device: "slirp helper socket", code: error.code))
            case .success(let r):
                if r == .processed(n) { return }
            }
            if !waiting { break }
            var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = poll(&p, 1, 10)
        }
        throw .system(SystemCallError(call: "send (offload settings)", device: "slirp helper socket", errno: EAGAIN))
    }

    public override func send(_ frame: UnsafeBufferPointer<iovec>, more: Bool) throws(NetBackendError) -> SendResult {
        let r = try super.send(frame, more: more)
        // The helper cuts every GSO frame for libslirp: count it here, where the report is.
        if case .sent = r, vnetHeaderLength > 0, let base = frame.first?.iov_base, frame[0].iov_len >= 2,
           VirtioNetHeader.rawIsGSO(base) {
            statistics.softwareSegmented &+= 1
        }
        return r
    }

    /// The helper's drops report: its totals become this backend's drops, for the report.
    public override func control(_ bytes: UnsafeRawPointer, length: Int) -> Bool {
        guard let m = SlirpHelperLink.parseDropsMessage(bytes, length: length) else { return false }
        let i = (m.afterSend ? 0 : DropReason.allCases.count) + m.reason.rawValue
        guard m.total > helperDrops[i] else { return true }
        let n = m.total - helperDrops[i]
        helperDrops[i] = m.total
        if m.afterSend { statistics.countLostAfterSend(m.reason, n) } else { statistics.countLostBeforeReceive(m.reason, n) }
        return true
    }

    static func ownExecutable() -> String {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        return n > 0 ? String(nulTerminated: buf) : CommandLine.arguments[0]
    }

    // MARK: restarting (all on the loop thread)

    /// The helper closed its socket (or reset it): it is dying. Reading stops here; its
    /// exit, from the pidfd, decides what follows (a helper that keeps running without
    /// its socket is killed after a second).
    public override func peerGone(_ why: String) throws(NetBackendError) {
        switch phase {
        case .running:
            detach()
            phase = .dying
            armTimer(milliseconds: 1000) { [weak self] in self?.helper?.kill() }
        case .exited(let status):
            detach()
            died(status, how: nil)
        default:
            detach()
        }
    }

    private func stopHelper() {
        phase = .stopped
        cancelTimer()
        handshakeSource?.cancel()
        handshakeSource = nil
        exitSource?.cancel()
        exitSource = nil
        super.close()
        guard let h = helper else { return }
        helper = nil
        h.terminate()
    }

    public override func close() { stopHelper() }
}
