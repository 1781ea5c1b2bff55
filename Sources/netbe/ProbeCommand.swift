import ArgumentParser
import Foundation
import NetBackends

/// `netbe probe SPEC`: opens the backend and prints what it can do.
struct ProbeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "probe", abstract: "Open a backend and print its capabilities and header lengths.")

    @Argument(help: "Backend spec")
    var spec: String
    @Flag(name: .long, help: "Print JSON.")
    var json = false
    @OptionGroup var common: CommonOptions

    struct Result: Encodable {
        var kind: String
        var name: String
        var capabilities: [String]
        var capabilities_bits: String
        var header_lengths: [Int]
        var preferred_header_length: Int
    }

    func run() throws {
        common.bootstrapLogging()
        let loop = try NetEventLoop()
        let backend = try BackendRegistry.shared.open(spec, on: loop)
        defer { backend.close() }
        let caps = backend.capabilities
        let r = Result(kind: backend.kind, name: backend.name, capabilities: caps.names,
                       capabilities_bits: "0x" + String(caps.rawValue, radix: 16),
                       header_lengths: backend.supportedHeaderLengths, preferred_header_length: backend.preferredHeaderLength)
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try enc.encode(r), as: UTF8.self))
        } else {
            print("kind: \(r.kind)\nname: \(r.name)\ncapabilities: \(caps) (\(r.capabilities_bits))")
            print("header lengths: \(r.header_lengths.map(String.init).joined(separator: ", ")) (preferred \(r.preferred_header_length))")
        }
    }
}
