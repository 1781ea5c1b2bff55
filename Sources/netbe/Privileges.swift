import Foundation
import NetBackends

/// Dropping root after the backends are open: open descriptors (taps) keep working.
enum Privileges {
    static func drop(to user: String) throws {
        guard let pw = getpwnam(user) else {
            throw NetBackendError.badSpec("--user \(user): no such user")
        }
        let uid = pw.pointee.pw_uid, gid = pw.pointee.pw_gid
        // Order matters: groups and gid while still privileged, uid last.
        if setgroups(0, nil) < 0 && getuid() == 0 {
            throw NetBackendError.system(SystemCallError(call: "setgroups", device: user, errno: errno))
        }
        if setgid(gid) < 0 { throw NetBackendError.system(SystemCallError(call: "setgid \(gid)", device: user, errno: errno)) }
        if setuid(uid) < 0 { throw NetBackendError.system(SystemCallError(call: "setuid \(uid)", device: user, errno: errno)) }
        if uid != 0 && setuid(0) == 0 {
            throw NetBackendError.invalidArgument("--user \(user): privileges could be regained after dropping them")
        }
    }
}
