import CNetBackends
#if canImport(Glibc)
import Glibc
#endif

/// Runs work inside a network namespace made by `ip netns add`. setns(2) changes only
/// the calling thread, so the work runs on a fresh pthread that is discarded afterwards:
/// never a Swift concurrency thread, never the caller's. Descriptors opened there keep
/// their namespace when used from any thread.
enum NetworkNamespace {
    /// `name` is a name under /var/run/netns, or a path when it contains '/'.
    static func path(for name: String) -> String {
        name.contains("/") ? name : "/var/run/netns/\(name)"
    }

    private final class Job: @unchecked Sendable {
        let nsPath: String
        let work: () -> Void
        var failure: NetBackendError?
        init(nsPath: String, work: @escaping () -> Void) {
            self.nsPath = nsPath
            self.work = work
        }
        func run() {
            let nsfd = Glibc.open(nsPath, O_RDONLY | O_CLOEXEC)
            if nsfd < 0 {
                let e = errno
                failure = e == ENOENT
                    ? .badSpec("network namespace \(nsPath) does not exist (create it with 'ip netns add')")
                    : .system(SystemCallError(call: "open", device: nsPath, errno: e))
                return
            }
            defer { _ = Glibc.close(nsfd) }
            if cnb_setns(nsfd, cnb_CLONE_NEWNET) < 0 {
                failure = .system(SystemCallError(call: "setns", device: nsPath, errno: errno))
                return
            }
            work()
        }
    }

    /// Runs `body` in namespace `name` (or on this thread, when nil) and returns its result.
    static func run<T>(in name: String?, _ body: @escaping () throws(NetBackendError) -> T) throws(NetBackendError) -> T {
        guard let name else { return try body() }
        var result: Result<T, NetBackendError>?
        let job = Job(nsPath: path(for: name)) {
            do throws(NetBackendError) { result = .success(try body()) } catch { result = .failure(error) }
        }
        var thread = pthread_t()
        let ctx = Unmanaged.passRetained(job).toOpaque()
        let rc = pthread_create(&thread, nil, { raw in
            Unmanaged<Job>.fromOpaque(raw!).takeRetainedValue().run()
            return nil
        }, ctx)
        if rc != 0 {
            Unmanaged<Job>.fromOpaque(ctx).release()
            throw .system(SystemCallError(call: "pthread_create", device: name, errno: rc))
        }
        pthread_join(thread, nil)
        if let f = job.failure { throw f }
        guard let result else { throw .invalidArgument("namespace \(name): the work did not run") }
        return try result.get()
    }
}
