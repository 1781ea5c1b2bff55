import Foundation

/// A network namespace made for one test, with a unique name, deleted when the value
/// goes away (also when the test throws). Deleting it removes its interfaces.
final class TestNamespace {
    nonisolated(unsafe) private static var counter = 0
    private static let lock = NSLock()

    let name: String
    private var deleted = false

    init(_ label: String = "ns") throws {
        try requireRoot()
        let n = TestNamespace.lock.withLock { () -> Int in TestNamespace.counter += 1; return TestNamespace.counter }
        name = "nbt\(getpid())-\(label)\(n)"
        try sh("ip", "netns", "add", name)
        try sh("ip", "-n", name, "link", "set", "lo", "up")
    }

    deinit { delete() }

    func delete() {
        guard !deleted else { return }
        deleted = true
        _ = try? sh(["ip", "netns", "del", name], allowFailure: true)
    }

    /// Runs a command inside the namespace to completion.
    @discardableResult
    func run(_ args: String...) throws -> String { try sh(["ip", "netns", "exec", name] + args) }

    /// Starts a command inside the namespace; it is killed when the returned value goes away.
    func spawn(_ args: [String]) throws -> TestProcess {
        try TestProcess(["ip", "netns", "exec", name] + args)
    }

    /// Adds an address and brings the interface up.
    func address(_ ifname: String, _ cidr: String) throws {
        try sh("ip", "-n", name, "addr", "add", cidr, "dev", ifname)
        try sh("ip", "-n", name, "link", "set", ifname, "up")
    }

    /// Waits until `ifname` exists and has carrier (LOWER_UP).
    func waitCarrier(_ ifname: String, seconds: Double = 5) throws {
        try waitUntil(seconds, "carrier on \(name)/\(ifname)") {
            let s = (try? sh(["ip", "-n", name, "link", "show", ifname], allowFailure: true)) ?? ""
            return s.contains("LOWER_UP")
        }
    }
}
