import Foundation
import MallocInterposerSwift
import Synchronization

/// Counts the allocations one event loop's thread makes while a measured body runs
/// (malloc-interposer's hook), then proves the counter works: an allocation made on that
/// thread must be seen, or a zero would mean nothing. The hook is process-wide, so the
/// suites that measure take turns (`turn`), even when Swift Testing runs them in parallel.
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
        }
    }

    static func measure<T>(on thread: LoopThread, _ body: () -> T) throws -> Measurement<T> {
        turn.lock()
        defer { turn.unlock() }
        watched = try thread.sync { pthread_self() }
        MallocInterposerSwift.setAllocationHook(hook)
        defer { MallocInterposerSwift.setAllocationHook(nil) }
        count.store(0, ordering: .relaxed)
        MallocInterposerSwift.hook()
        let value = body()
        MallocInterposerSwift.unhook()
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
