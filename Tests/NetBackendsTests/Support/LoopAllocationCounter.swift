import Foundation
import MallocInterposerSwift
import Synchronization

/// Counts the allocations one event loop's thread makes while a measured body runs
/// (malloc-interposer's hook), then proves the counter works: an allocation made on that
/// thread must be seen, or a zero would mean nothing. The hook is process-wide, so the
/// suites that measure take turns (`turn`), even when Swift Testing runs them in parallel.
/// With `NETBE_ALLOC_TRACE` set, each counted allocation prints its backtrace on stderr.
enum LoopAllocationCounter {
    struct Measurement<T> {
        let value: T
        let allocations: Int
        /// The control allocation on the loop thread was counted.
        let controlSeen: Bool
    }

    nonisolated(unsafe) private static var watched = pthread_t()
    private static let count = Atomic<Int>(0)
    private static let turn = NSLock()
    /// Kept past the counting window: an allocation freed at once may be optimised away.
    nonisolated(unsafe) private static var controlBlock: UnsafeMutableRawPointer?
    // A C function pointer: it reaches its state through statics.
    private static let hook: MallocInterposerSwift.AllocationHook = { _ in
        if pthread_equal(LoopAllocationCounter.watched, pthread_self()) != 0 {
            LoopAllocationCounter.count.add(1, ordering: .relaxed)
            if LoopAllocationCounter.tracing { LoopAllocationCounter.printBacktrace() }
        }
    }

    // Tracing, found with dlsym so that nothing here allocates inside the hook.
    private typealias BacktraceCall = @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>, Int32) -> Int32
    private typealias SymbolsCall = @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>, Int32, Int32) -> Void
    nonisolated(unsafe) private static var tracing = false
    nonisolated(unsafe) private static let traceBuffer = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 64)
    nonisolated(unsafe) private static let backtrace = unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "backtrace"), to: BacktraceCall.self)
    nonisolated(unsafe) private static let symbols = unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "backtrace_symbols_fd"), to: SymbolsCall.self)
    private static func printBacktrace() {
        let n = backtrace(traceBuffer, 64)
        symbols(traceBuffer, n, 2)
    }

    static func measure<T>(on thread: LoopThread, _ body: () -> T) throws -> Measurement<T> {
        turn.lock()
        defer { turn.unlock() }
        watched = try thread.sync { pthread_self() }
        MallocInterposerSwift.setAllocationHook(hook)
        defer { MallocInterposerSwift.setAllocationHook(nil) }
        count.store(0, ordering: .relaxed)
        tracing = getenv("NETBE_ALLOC_TRACE") != nil
        if tracing { _ = backtrace(traceBuffer, 64) }   // its first call loads libgcc: not inside the hook
        MallocInterposerSwift.hook()
        let value = body()
        MallocInterposerSwift.unhook()
        tracing = false
        let allocations = count.load(ordering: .relaxed)

        count.store(0, ordering: .relaxed)
        MallocInterposerSwift.hook()
        let made = try thread.sync { () -> Bool in
            LoopAllocationCounter.controlBlock = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 16)
            return true
        }
        MallocInterposerSwift.unhook()
        controlBlock?.deallocate()
        controlBlock = nil
        return Measurement(value: value, allocations: allocations, controlSeen: made && count.load(ordering: .relaxed) >= 1)
    }
}
