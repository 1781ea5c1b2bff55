import CNetBackends
import CSlirp
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// The `slirp` backend as the main process sees it with `helper=on`: a seqpacket
/// socket to a helper process that runs libslirp with dropped privileges (bhyve's
/// design). When the helper dies, the death is logged and a new helper is started
/// at once with the same spec; frames sent meanwhile are dropped as `no_peer`, and TCP
/// in the guest retransmits. Connections the old helper had NATed are lost with it.
public final class SlirpHelperBackend: SeqpacketBackend, @unchecked Sendable {
    /// The program re-executed as the helper; it must understand the hidden
    /// `slirp-helper` subcommand (netbe does). Defaults to this process's own binary.
    nonisolated(unsafe) public static var executable: String?

    public let configuration: SlirpConfiguration
    /// The helper's process id (changes when it is restarted).
    public private(set) var helperPID: pid_t
    /// How many times the helper was restarted.
    public private(set) var restarts = 0
    private var helper: SlirpHelperProcess?
    private let program: String
    private var recentRestarts: [Int64] = []
    /// The helper's drop totals last heard (after send, then before receive, by reason).
    private var helperDrops = [UInt64](repeating: 0, count: 2 * DropReason.allCases.count)
    private let log = Logger(label: "netbe.slirp")

    public init(spec: BackendSpec, configuration: SlirpConfiguration, eventLoop: NetEventLoop) throws(NetBackendError) {
        self.configuration = configuration
        // Resolved now: after a privilege drop /proc/self/exe may no longer be readable.
        program = Self.executable ?? Self.ownExecutable()
        let h = try SlirpHelperProcess.start(executable: program, specText: spec.text)
        helper = h
        helperPID = h.pid
        do {
            try super.init(spec: spec, kind: "slirp", name: "slirp helper", fd: h.fd,
                           linkHeaderLength: VirtioNetHeader.mergeableLength, eventLoop: eventLoop)
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
    /// buffer large, so waiting for room (at most a second) is only ever a formality.
    private func tellFeatures() throws(NetBackendError) {
        guard fd >= 0 else { return }
        var message = SlirpHelperLink.featuresMessage(helperFeatures)
        let n = message.count
        for _ in 0..<100 {
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

    /// The helper closed its socket: it died. Report, reap, restart (at most 5 times in
    /// 10 s, so that a helper that cannot run does not spin).
    public override func peerGone(_ why: String) throws(NetBackendError) {
        guard let old = helper else { return }
        helper = nil
        detach()   // closes our end; the old helper's fd number may be reused below
        let how = SlirpHelperProcess.describe(status: old.reap(blocking: true))
        log.error("slirp helper (pid \(old.pid)) \(how); restarting it")
        let now = SlirpStack.nowMilliseconds()
        recentRestarts = recentRestarts.filter { now - $0 < 10_000 } + [now]
        if recentRestarts.count > 5 {
            throw .deviceGone("slirp helper died \(recentRestarts.count) times within 10 s; giving up")
        }
        let h = try SlirpHelperProcess.start(executable: program, specText: spec.text)
        helper = h
        helperPID = h.pid
        restarts += 1
        helperDrops = helperDrops.map { _ in 0 }   // a new helper counts from zero
        try attach(fd: h.fd)
        try tellFeatures()
        log.notice("slirp helper restarted (pid \(h.pid)); traffic resumes")
    }

    private func stopHelper() {
        guard let h = helper else { return }
        helper = nil
        super.close()
        // Our end was closed by super.close(); terminate() closes it again harmlessly
        // only if it is still ours, so hand it an invalid descriptor.
        SlirpHelperProcess(pid: h.pid, fd: -1).terminate()
    }

    public override func close() { stopHelper() }
}
