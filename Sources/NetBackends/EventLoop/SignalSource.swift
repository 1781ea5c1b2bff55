#if os(Linux)
import CNetBackends
import Glibc

extension NetEventLoop {
    /// Blocks `signals` in the calling thread and every thread it creates afterwards, so
    /// they reach only a signalfd. Call early in `main`, before any thread exists.
    public static func blockSignals(_ signals: [Int32]) {
        var set = sigset_t()
        sigemptyset(&set)
        for s in signals { sigaddset(&set, s) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Delivers `signals` on the loop thread (the seed's EVF_SIGNAL) through a signalfd.
    /// The signals must be blocked (`blockSignals`) or they keep their default action.
    public func watchSignals(_ signals: [Int32], handler: @escaping @Sendable (_ signal: Int32) -> Void) throws(SystemCallError) -> EventSource {
        var set = sigset_t()
        sigemptyset(&set)
        for s in signals { sigaddset(&set, s) }
        let fd = try Syscall.check("signalfd", device: "event loop") { signalfd(-1, &set, Int32(SFD_NONBLOCK | SFD_CLOEXEC)) }
        let source = try watch(fd: fd, name: "signals", ownsDescriptor: true) { _ in
            var info = signalfd_siginfo()
            let size = MemoryLayout<signalfd_siginfo>.size
            while Glibc.read(fd, &info, size) == size {
                handler(Int32(info.ssi_signo))
            }
        }
        source.enable(.read)
        return source
    }
}
#endif
