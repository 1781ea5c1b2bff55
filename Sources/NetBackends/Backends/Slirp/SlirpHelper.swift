import CNetBackends
import CSlirp
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// The helper process's side (what `netbe slirp-helper` runs): libslirp in-process,
/// joined to the seqpacket socket from the main process by a `SlirpHelperLink`.
///
/// Order matters: die-with-parent first (PR_SET_PDEATHSIG, then a getppid check for a
/// parent that died before that), open libslirp and bind the port forwards while still
/// privileged, then drop to `nobody` when running as root, ask for the parent-death
/// signal again (the kernel clears it when the effective ids change, prctl(2)), and
/// only then say ready.
public enum SlirpHelper {
    public static let subcommand = "slirp-helper"

    /// Runs until the main process goes away; returns the exit status.
    public static func run(socket fd: Int32, parent: pid_t, spec text: String) -> Int32 {
        let log = Logger(label: "netbe.slirp-helper")
        guard diesWithParent(parent) else { return 1 }
        signal(SIGPIPE, SIG_IGN)
        let loop: NetEventLoop
        let stack: SlirpStack
        let link: SlirpHelperLink
        do {
            loop = try NetEventLoop()
            let spec = try BackendSpec(parsing: text)
            let reader = SpecReader(spec, repeatable: ["hostfwd"])
            let configuration = try SlirpConfiguration(reader)
            try reader.finish(kind: "slirp")
            stack = try SlirpStack(configuration, specText: spec.text, eventLoop: loop)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            link = try SlirpHelperLink(fd: fd, stack: stack, eventLoop: loop)
            try dropPrivileges()
            // The drop (a change of effective uid/gid) cleared PR_SET_PDEATHSIG; a parent
            // that died meanwhile made us init's child, which getppid shows.
            guard diesWithParent(parent) else { return 1 }
        } catch let error as NetBackendError {
            report(fd, status: error.exitStatus, error.description)
            return error.exitStatus
        } catch {
            report(fd, status: 1, "\(error)")
            return 1
        }
        var ready = SlirpHelperProcess.readyMessage
        guard send(fd, &ready, 1, cnb_MSG_NOSIGNAL) == 1 else { return 1 }
        link.start()
        defer {
            link.close()
            stack.close()
        }
        do {
            try loop.run()
        } catch let error as NetBackendError {
            if case .deviceGone = error { return 0 }   // the main process went away
            log.error("\(error)")
            return error.exitStatus
        } catch {
            log.error("\(error)")
            return 1
        }
        return 0
    }

    /// Asks for SIGKILL when the parent goes, checks it holds and that `parent` is still
    /// the parent (it may have died before the request): false means exit now.
    private static func diesWithParent(_ parent: pid_t) -> Bool {
        cnb_set_parent_death_signal(SIGKILL) == 0 && cnb_get_parent_death_signal() == SIGKILL && getppid() == parent
    }

    private static func report(_ fd: Int32, status: Int32, _ message: String) {
        let digit = UInt8(ascii: "0") + UInt8(clamping: max(0, min(9, status)))
        var bytes = [SlirpHelperProcess.errorMessage, digit] + Array(message.utf8.prefix(1000))
        _ = send(fd, &bytes, bytes.count, cnb_MSG_NOSIGNAL)
    }

    /// As root, becomes `nobody` (groups, gid, then uid); otherwise keeps the user.
    static func dropPrivileges() throws(NetBackendError) {
        guard geteuid() == 0 else { return }
        guard let pw = getpwnam("nobody") else {
            throw .unavailable("slirp helper: no user 'nobody' to drop privileges to")
        }
        let uid = pw.pointee.pw_uid, gid = pw.pointee.pw_gid
        do throws(SystemCallError) {
            try Syscall.check("setgroups", device: "slirp helper") { setgroups(0, nil) }
            try Syscall.check("setgid \(gid)", device: "slirp helper") { setgid(gid) }
            try Syscall.check("setuid \(uid)", device: "slirp helper") { setuid(uid) }
        } catch {
            throw .system(error)
        }
        if setuid(0) == 0 { throw .invalidArgument("slirp helper: root could be regained after dropping it") }
    }
}
