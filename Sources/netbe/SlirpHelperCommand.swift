import ArgumentParser
import Foundation
import NetBackends

/// `netbe slirp-helper` (hidden): the privilege-separated libslirp process that the
/// `slirp` backend starts by re-executing netbe. Not for users: its only interface is
/// the seqpacket socket it inherits (see SlirpHelper in the library).
struct SlirpHelperCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: SlirpHelper.subcommand,
        abstract: "Internal: run libslirp for a parent netbe process.",
        shouldDisplay: false
    )

    @Option(name: .long, help: "The inherited SOCK_SEQPACKET socket.")
    var fd: Int32
    @Option(name: .long, help: "The parent's process id; the helper exits if it is gone.")
    var parent: Int32
    @Argument(help: "The slirp backend spec.")
    var spec: String
    @OptionGroup var common: CommonOptions

    func run() throws {
        common.bootstrapLogging()
        let status = SlirpHelper.run(socket: fd, parent: parent, spec: spec)
        if status != 0 { throw ExitCode(status) }
    }
}
