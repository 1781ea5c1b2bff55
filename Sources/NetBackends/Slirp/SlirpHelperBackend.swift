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
    private let log = Logger(label: "netbe.slirp")

    public init(spec: BackendSpec, configuration: SlirpConfiguration, eventLoop: EventLoop) throws(NetBackendError) {
        self.configuration = configuration
        // Resolved now: after a privilege drop /proc/self/exe may no longer be readable.
        program = Self.executable ?? Self.ownExecutable()
        let h = try SlirpHelperProcess.start(executable: program, specText: spec.text)
        helper = h
        helperPID = h.pid
        do {
            try super.init(spec: spec, kind: "slirp", name: "slirp helper", fd: h.fd, eventLoop: eventLoop)
        } catch {
            h.terminate()
            throw error
        }
        log.info("slirp helper started (pid \(h.pid))")
    }

    deinit { stopHelper() }

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
        try attach(fd: h.fd)
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
