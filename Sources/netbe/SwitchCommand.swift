import ArgumentParser
import Foundation
import Logging
import NetBackends

/// `netbe switch NAME... [--port SPEC]... [--socket PATH]`: hosts learning switches that
/// `vale*` backends in other processes attach to over a unix socket; `--port` specs run
/// as ports inside this process (on the first switch named).
struct SwitchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switch",
        abstract: "Host VALE-style switches; print 'ready', switch until SIGINT/SIGTERM, then print each port's counters as JSON."
    )

    @Argument(help: "Switch names, e.g. vale0")
    var names: [String]
    @Option(name: .long, help: "A backend spec run as a port of the first switch (repeatable), e.g. slirp or tap0,netns=a")
    var port: [String] = []
    @Option(name: .long, help: "The control socket (default $XDG_RUNTIME_DIR/netbe/switch.sock, /run/netbe/switch.sock for root).")
    var socket: String?
    @OptionGroup var common: CommonOptions

    func run() throws {
        common.bootstrapLogging()
        let log = Logger(label: "netbe.switch")
        guard !names.isEmpty else { throw ValidationError("name at least one switch") }
        for n in names where !(n.hasPrefix("vale") && SwitchNames.valid(n)) {
            throw NetBackendError.badSpec("bad switch name '\(n)': valeX, up to 32 of [A-Za-z0-9_.-]")
        }
        guard Set(names).count == names.count else { throw NetBackendError.badSpec("a switch is named twice") }
        NetEventLoop.blockSignals([SIGINT, SIGTERM])
        signal(SIGPIPE, SIG_IGN)
        let loop = try NetEventLoop()
        let registry = BackendRegistry.shared
        for spec in port { try registry.check(spec) }
        let path = try socket ?? SwitchControl.defaultSocketPath()
        let switches = names.map { NetSwitch(name: $0, eventLoop: loop) }
        var backends: [NetBackend] = []
        defer { for b in backends { b.close() } }
        for spec in port {
            let b = try registry.open(spec, on: loop)
            backends.append(b)
            var name = SwitchNames.portName(for: b.spec.name)
            var n = 2
            while switches[0].port(named: name) != nil { name = "\(SwitchNames.portName(for: b.spec.name))-\(n)"; n += 1 }
            try switches[0].attach(b, name: name)
        }
        let server = try SwitchServer(socketPath: path, switches: switches, eventLoop: loop)
        log.info("switches \(names.joined(separator: " ")) on \(path)")
        _ = try loop.watchSignals([SIGINT, SIGTERM]) { signal in
            log.info("signal \(signal): stopping")
            loop.stop()
        }
        print("ready")
        fflush(nil)
        var failure: Error?
        do { try loop.run() } catch { failure = error }
        let report = switches.flatMap { sw in sw.ports.map { SwitchPortReport($0, on: sw) } }
        server.stop()
        for sw in switches { sw.detachAll() }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        for r in report { if let d = try? encoder.encode(r) { print(String(decoding: d, as: UTF8.self)) } }
        fflush(nil)
        if let failure {
            log.error("\(failure)")
            throw ExitCode(1)
        }
    }
}

/// A port's counters when `netbe switch` stops (CONTRACT.md: one JSON object per port).
struct SwitchPortReport: Encodable {
    var port: String
    var kind: String
    var frames: UInt64
    var bytes: UInt64
    var rx_frames: UInt64
    var gso_frames: UInt64
    var sw_segmented: UInt64
    var drops: [String: UInt64]

    init(_ p: SwitchPort, on sw: NetSwitch) {
        port = "\(sw.name):\(p.name)"
        kind = p.backend.kind
        frames = p.sent.frames
        bytes = p.sent.bytes
        rx_frames = p.received.frames
        gso_frames = p.sent.gsoFrames
        sw_segmented = p.sent.softwareSegmented &+ p.backend.statistics.softwareSegmented
        var d: [String: UInt64] = [:]
        for (reason, count) in p.dropsByReason { d[reason.description] = count }
        drops = d
    }
}

enum SwitchNames {
    static func valid(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 32 && s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "_.-".contains($0)) }
    }

    /// A `--port` spec's name as a port name (`tap0`, `slirp`; other characters become `_`).
    static func portName(for specName: String) -> String {
        String(String(specName.map { $0.isASCII && ($0.isLetter || $0.isNumber || "_.-".contains($0)) ? $0 : "_" }).prefix(32))
    }
}
