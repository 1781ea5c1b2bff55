import Foundation

/// The `netbe` executable built next to the test bundle (same configuration), or $NETBE.
enum NetbeBinary {
    static var path: String {
        get throws {
            if let p = ProcessInfo.processInfo.environment["NETBE"] { return p }
            let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            let candidate = dir.appendingPathComponent("netbe").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            throw TestFailure("netbe is not built next to the tests (\(candidate)): run 'swift build' with the same -c as 'swift test', or set NETBE")
        }
    }

    /// Starts `netbe ARGS` (optionally inside a namespace) and waits for `ready`.
    static func start(_ args: [String], waitReady: Bool = true) throws -> TestProcess {
        let p = try TestProcess([try path] + args)
        if waitReady { try p.waitForLine("ready") }
        return p
    }

    /// Runs `netbe ARGS` to completion: (status, stdout, stderr).
    static func run(_ args: [String], seconds: Double = 30) throws -> (status: Int32, stdout: String, stderr: String) {
        let p = try TestProcess([try path] + args)
        let status = try p.wait(seconds: seconds)
        return (status, p.stdout, p.stderr)
    }

    /// The JSON objects netbe printed on stdout after it stopped (one per direction).
    static func counters(_ stdout: String) throws -> [[String: Any]] {
        try stdout.split(separator: "\n").filter { $0.hasPrefix("{") }.map {
            guard let o = try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] else {
                throw TestFailure("not a JSON object: \($0)")
            }
            return o
        }
    }
}
