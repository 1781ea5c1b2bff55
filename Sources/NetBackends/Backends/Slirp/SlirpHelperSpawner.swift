#if canImport(Glibc)
import Glibc
#endif

/// The one thread that starts helper processes, for as long as the process lives.
///
/// PR_SET_PDEATHSIG fires when the *thread* that created the child exits, not the process
/// (prctl(2): "the 'parent' in this case is considered to be the thread that created this
/// process"). A helper started from a VMM's short-lived set-up thread, or from an event
/// loop thread that is later stopped, would be killed with that thread. Every spawn is
/// therefore done here: the thread is never joined and never returns, so the helper's
/// parent-death signal means what it should, the death of this process. It blocks every
/// signal, so that it never takes one meant for the process.
final class SlirpHelperSpawner: @unchecked Sendable {
    static let shared = SlirpHelperSpawner()

    private let lock = ConditionLock()
    private var jobs: [() -> Void] = []
    private var started = false

    /// Runs `job` on the spawner thread and returns at once.
    func submit(_ job: @escaping () -> Void) {
        lock.withLock {
            jobs.append(job)
            if !started { started = start() }
            lock.broadcast()
        }
    }

    /// Runs `job` on the spawner thread and waits for its result.
    func run<T>(_ job: @escaping () -> T) -> T {
        let done = ConditionLock()
        var result: T?
        submit {
            let r = job()
            done.withLock {
                result = r
                done.broadcast()
            }
        }
        return done.withLock {
            while result == nil { done.wait() }
            return result!
        }
    }

    /// Creates the thread (lock held); false when pthread_create failed, and then jobs
    /// run on the caller's thread instead (a helper then dies with that thread).
    private func start() -> Bool {
        var thread = pthread_t()
        let context = Unmanaged.passUnretained(self).toOpaque()
        let rc = pthread_create(&thread, nil, { raw in
            var all = sigset_t()
            sigfillset(&all)
            pthread_sigmask(SIG_SETMASK, &all, nil)
            Unmanaged<SlirpHelperSpawner>.fromOpaque(raw!).takeUnretainedValue().serve()
        }, context)
        if rc != 0 {
            let pending = jobs
            jobs = []
            lock.unlock()
            pending.forEach { $0() }
            lock.lock()
            return false
        }
        pthread_detach(thread)
        return true
    }

    private func serve() -> Never {
        while true {
            let job: () -> Void = lock.withLock {
                while jobs.isEmpty { lock.wait() }
                return jobs.removeFirst()
            }
            job()
        }
    }
}
