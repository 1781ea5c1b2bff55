import Foundation

/// A process a test started. stdout and stderr go to temporary files (no pipe can fill
/// and stall it); the process is killed by PID and reaped when the value goes away.
final class TestProcess {
    let process = Process()
    let stdoutURL: URL
    let stderrURL: URL
    private var finished = false

    init(_ args: [String], environment: [String: String]? = nil) throws {
        let dir = FileManager.default.temporaryDirectory
        let id = UUID().uuidString.prefix(8)
        stdoutURL = dir.appendingPathComponent("nbt-\(id).out")
        stderrURL = dir.appendingPathComponent("nbt-\(id).err")
        _ = FileManager.default.createFile(atPath: stdoutURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: stderrURL.path, contents: nil)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = args
        if let environment { process.environment = environment }
        process.standardOutput = try FileHandle(forWritingTo: stdoutURL)
        process.standardError = try FileHandle(forWritingTo: stderrURL)
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: stdoutURL)
        try? FileManager.default.removeItem(at: stderrURL)
    }

    var pid: Int32 { process.processIdentifier }
    var stdout: String { (try? String(contentsOf: stdoutURL, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOf: stderrURL, encoding: .utf8)) ?? "" }
    var isRunning: Bool { process.isRunning }

    /// Waits for a whole line on stdout (e.g. `ready`); fails with stderr if the process exits first.
    func waitForLine(_ line: String, seconds: Double = 15) throws {
        try waitUntil(seconds, "'\(line)' from \(process.arguments?.joined(separator: " ") ?? "")") {
            if stdout.split(separator: "\n").contains(Substring(line)) { return true }
            if !process.isRunning {
                throw TestFailure("process exited \(process.terminationStatus) before '\(line)': \(stderr)")
            }
            return false
        }
    }

    func signal(_ sig: Int32) { kill(pid, sig) }

    /// Sends `sig` (default SIGTERM) and waits for the exit status, at most `seconds`.
    @discardableResult
    func stop(_ sig: Int32 = SIGTERM, seconds: Double = 10) throws -> Int32 {
        if process.isRunning { kill(pid, sig) }
        try waitUntil(seconds, "pid \(pid) to exit") { !process.isRunning }
        return process.terminationStatus
    }

    /// Waits for a natural exit.
    @discardableResult
    func wait(seconds: Double = 60) throws -> Int32 {
        try waitUntil(seconds, "pid \(pid) to finish") { !process.isRunning }
        return process.terminationStatus
    }
}
