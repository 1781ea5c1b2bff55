import Foundation

/// Runs a command to completion and returns its stdout; throws with its stderr when it
/// exits non-zero. For set-up steps (`ip`, `tcpdump -r`), never for the code under test.
@discardableResult
func sh(_ args: [String], allowFailure: Bool = false) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = args
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    let stdout = String(decoding: outData, as: UTF8.self)
    if p.terminationStatus != 0 && !allowFailure {
        throw TestFailure("\(args.joined(separator: " ")) exited \(p.terminationStatus): \(String(decoding: errData, as: UTF8.self))\(stdout)")
    }
    return stdout
}

@discardableResult
func sh(_ args: String...) throws -> String { try sh(args) }

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Fails loudly when a tool the test needs is missing, naming the package to install.
func requireTool(_ tool: String, package: String) throws {
    let found = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        .contains { FileManager.default.isExecutableFile(atPath: "\($0)/\(tool)") }
    if !found { throw TestFailure("\(tool) is not installed: apt-get install -y \(package)") }
}

/// Tests that touch the kernel need root (CAP_NET_ADMIN); say so instead of a cryptic EPERM.
func requireRoot() throws {
    if getuid() != 0 { throw TestFailure("this test needs root (CAP_NET_ADMIN for taps and namespaces): run the suite as root") }
}

/// Polls `condition` every 20 ms until it holds or `seconds` pass.
func waitUntil(_ seconds: Double, _ what: String, _ condition: () throws -> Bool) throws {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try condition() { return }
        usleep(20_000)
    }
    throw TestFailure("timed out after \(seconds) s waiting for \(what)")
}
