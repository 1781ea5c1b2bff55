import ArgumentParser
import Foundation
import NetBackends

/// `netbe backends`: every kind, its prefixes and whether it works here.
struct BackendsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "backends", abstract: "List backend kinds and their availability here.")

    @Flag(name: .long, help: "Print JSON.")
    var json = false

    struct Entry: Encodable {
        var kind: String
        var prefixes: [String]
        var availability: String
        var summary: String
    }

    func run() throws {
        let entries = BackendRegistry.shared.kinds.map {
            Entry(kind: $0.name, prefixes: $0.prefixes, availability: $0.availability().description, summary: $0.summary)
        }
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
            print(String(decoding: try enc.encode(entries), as: UTF8.self))
            return
        }
        for e in entries {
            let kind = e.kind.padding(toLength: 8, withPad: " ", startingAt: 0)
            let prefixes = e.prefixes.joined(separator: " ").padding(toLength: 14, withPad: " ", startingAt: 0)
            print("\(kind) \(prefixes) \(e.availability)")
        }
    }
}
