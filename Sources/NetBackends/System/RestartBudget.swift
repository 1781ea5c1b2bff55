#if canImport(Glibc)
import Glibc
#endif

/// How often a supervised child (the slirp helper, passt) may die before its backend
/// gives up, and how long to wait before each restart: the first restart within the
/// window is immediate, the next ones wait 100, 200, 400, 800, 1600 ms, so that a child
/// that dies at once does not spin a CPU; more than `deaths` deaths within `seconds`
/// seconds give up (netbe exits 1).
struct RestartBudget {
    let deaths: Int
    let seconds: Int
    private var recent: [Int64] = []

    enum Verdict: Equatable {
        case restart(afterMilliseconds: Int)
        case giveUp(deaths: Int)
    }

    init(deaths: Int, seconds: Int) {
        self.deaths = deaths
        self.seconds = seconds
    }

    /// Counts a death now and says what to do about it.
    mutating func recordDeath(atMilliseconds now: Int64 = RestartBudget.now()) -> Verdict {
        recent = recent.filter { now - $0 < Int64(seconds) * 1000 } + [now]
        let n = recent.count
        if n > deaths { return .giveUp(deaths: n) }
        return .restart(afterMilliseconds: n <= 1 ? 0 : 100 << min(n - 2, 4))
    }

    /// CLOCK_MONOTONIC in milliseconds.
    static func now() -> Int64 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Int64(t.tv_sec) * 1000 + Int64(t.tv_nsec) / 1_000_000
    }
}
