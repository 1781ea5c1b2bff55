import ArgumentParser
import Foundation
import Logging
import NetBackends

/// `netbe connect SPEC SPEC`: joins two backends both ways until SIGINT/SIGTERM.
struct ConnectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "connect",
        abstract: "Join two backends both ways; print 'ready', relay until SIGINT/SIGTERM, then print counters as JSON."
    )

    @Argument(help: "First backend spec, e.g. tap0,netns=ns1")
    var first: String
    @Argument(help: "Second backend spec")
    var second: String
    @Option(name: .long, help: "Write every relayed frame (without virtio-net header) to this pcap file.")
    var pcap: String?
    @Option(name: .long, help: "After opening the backends, drop privileges to this user.")
    var user: String?
    @OptionGroup var common: CommonOptions

    func run() throws {
        common.bootstrapLogging()
        let log = Logger(label: "netbe.connect")
        NetEventLoop.blockSignals([SIGINT, SIGTERM])   // before any thread exists
        signal(SIGPIPE, SIG_IGN)
        let loop = try NetEventLoop()
        let registry = BackendRegistry.shared
        // Both specs are checked before either is opened: a bad second spec must not
        // leave the first one's side effects (a tap created, a peer connected) behind.
        try registry.check(first)
        try registry.check(second)
        let a = try registry.open(first, on: loop)
        defer { a.close() }
        let b = try registry.open(second, on: loop)
        defer { b.close() }
        let capture = try pcap.map { (path) throws(NetBackendError) in try PcapWriter(path: path) }
        defer { capture?.close() }
        let relay = try Relay(a, b, capture: capture)
        for side in [a, b] {
            log.info("opened \(side.kind) \(side.name): header \(side.vnetHeaderLength) bytes, offloads \(side.negotiatedFeatures)")
        }
        if let user { try Privileges.drop(to: user) }
        _ = try loop.watchSignals([SIGINT, SIGTERM]) { signal in
            log.info("signal \(signal): stopping")
            loop.stop()
        }
        if let capture {
            _ = try loop.addTimer(name: "pcap-flush", intervalMilliseconds: 1000) { capture.flush() }
        }
        relay.start()
        print("ready")
        fflush(nil)
        var failure: Error?
        do { try loop.run() } catch { failure = error }
        relay.stop()
        Report.print(relay)
        if let failure {
            log.error("\(failure)")
            if let e = failure as? NetBackendError { throw ExitCode(e.exitStatus) }
            throw ExitCode(1)
        }
    }
}
