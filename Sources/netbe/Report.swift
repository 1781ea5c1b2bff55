import Foundation
import NetBackends

/// The counters printed on stdout when `netbe` stops: one JSON object per direction.
enum Report {
    struct Direction: Encodable {
        var direction: String
        var from: String
        var to: String
        var frames: UInt64
        var bytes: UInt64
        var gso_frames: UInt64
        var sw_segmented: UInt64
        var drops: [String: UInt64]
    }

    static func direction(_ d: RelayDirection) -> Direction {
        var drops: [String: UInt64] = [:]
        // What the direction counted from send/receive results, plus what no result carried:
        // frames the sink took and lost later, frames the source lost before handing them out.
        for (reason, count) in d.dropsByReason { drops[reason.description] = count }
        // The super-frames the sink cut in software (slirp: libslirp takes no GSO) belong here too.
        return Direction(direction: "\(d.source.name)->\(d.sink.name)", from: d.source.name, to: d.sink.name,
                         frames: d.statistics.frames, bytes: d.statistics.bytes, gso_frames: d.statistics.gsoFrames,
                         sw_segmented: d.statistics.softwareSegmented &+ d.sink.statistics.softwareSegmented, drops: drops)
    }

    static func print(_ relay: Relay) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        for d in [relay.forward, relay.backward] {
            if let data = try? encoder.encode(direction(d)) {
                Swift.print(String(decoding: data, as: UTF8.self))
            }
        }
        fflush(nil)
    }
}
