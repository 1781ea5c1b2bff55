import ArgumentParser
import Foundation
import Logging
import NetBackends

/// `netbe`: the command-line face of NetBackends (CONTRACT.md).
@main
struct Netbe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "netbe",
        abstract: "Network backends for virtual machines: join taps, sockets and user-mode NAT.",
        version: NetBackendsVersion.string,
        subcommands: [ConnectCommand.self, BackendsCommand.self, ProbeCommand.self, SlirpHelperCommand.self, RingEchoCommand.self, SwitchCommand.self, PortsCommand.self, SwitchTrafficCommand.self]
    )

    /// Exit statuses per CONTRACT.md: 2 for any usage or spec error, with one stderr line.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let error as NetBackendError {
            FileHandle.standardError.write(Data("netbe: \(error)\n".utf8))
            Foundation.exit(error.exitStatus)
        } catch let error as ExitCode {
            Foundation.exit(error.rawValue)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                Foundation.exit(0)
            }
            let line = message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            FileHandle.standardError.write(Data("netbe: \(line)\n".utf8))
            Foundation.exit(2)
        }
    }
}

/// Options every subcommand takes.
struct CommonOptions: ParsableArguments {
    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical (default info, or $NETBE_LOG_LEVEL).")
    var logLevel: Logger.Level?

    /// Logs go to stderr. The level is exported as NETBE_LOG_LEVEL so that processes netbe
    /// starts (the slirp helper) log at the same level.
    func bootstrapLogging() {
        let level = logLevel ?? ProcessInfo.processInfo.environment["NETBE_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
        setenv("NETBE_LOG_LEVEL", level.rawValue, 1)
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
