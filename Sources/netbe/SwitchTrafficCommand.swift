import ArgumentParser
import Foundation
import NetBackends

/// `netbe switch-traffic SPEC --send|--receive` (hidden): the generator and the sink of
/// bench/switch. The sink says who it is once (a broadcast from 02:00:00:00:00:02, so
/// that a learning switch knows where it is), then counts frames; the generator sends
/// frames of `--size` bytes to that MAC as fast as the backend takes them. Each prints
/// `frames N bytes B seconds S` when `--seconds` are over.
struct SwitchTrafficCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switch-traffic",
        abstract: "Internal: frame generator and sink for bench/switch.",
        shouldDisplay: false
    )

    @Argument(help: "Backend spec, e.g. vale0:gen")
    var spec: String
    @Flag(name: .long) var send = false
    @Flag(name: .long) var receive = false
    @Option(name: .long, help: "Frame size without virtio-net header (60...1514).")
    var size = 60
    @Option(name: .long) var seconds = 5.0
    @OptionGroup var common: CommonOptions

    static let sinkMAC: [UInt8] = [2, 0, 0, 0, 0, 2]
    static let generatorMAC: [UInt8] = [2, 0, 0, 0, 0, 1]

    func run() throws {
        common.bootstrapLogging()
        guard send != receive else { throw ValidationError("give one of --send and --receive") }
        guard (60...1514).contains(size) else { throw ValidationError("--size must be 60...1514") }
        let loop = try NetEventLoop()
        let backend = try BackendRegistry.shared.open(spec, on: loop)
        defer { backend.close() }
        let header = backend.preferredHeaderLength
        try backend.setCapabilities([], vnetHeaderLength: header)
        nonisolated(unsafe) let frame = UnsafeMutableRawBufferPointer.allocate(byteCount: 70_000, alignment: 64)
        defer { frame.deallocate() }
        frame.initializeMemory(as: UInt8.self, repeating: 0)
        let ethernet = frame.baseAddress! + header
        func put(_ bytes: [UInt8], at offset: Int) { for (i, b) in bytes.enumerated() { ethernet.storeBytes(of: b, toByteOffset: offset + i, as: UInt8.self) } }
        put(send ? Self.sinkMAC : [0xff, 0xff, 0xff, 0xff, 0xff, 0xff], at: 0)
        put(send ? Self.generatorMAC : Self.sinkMAC, at: 6)
        put([0x88, 0xb5], at: 12)   // IEEE local experimental EtherType
        nonisolated(unsafe) let out = UnsafeRawBufferPointer(start: frame.baseAddress, count: header + size)
        let counter = Counter()
        let size = self.size   // not through the option's wrapper per frame
        let start = Date()
        _ = try loop.addTimer(name: "bench-end", intervalMilliseconds: Int(seconds * 1000)) { loop.stop() }
        if receive {
            _ = try backend.send(out)
            backend.setReceiveHandler { [unowned backend] in
                let backend = backend   // one strong reference per wake-up, not per frame
                for _ in 0..<256 {
                    guard case .frame(let n) = (try? backend.receive(into: frame)) ?? .empty else { break }
                    counter.frames += 1
                    counter.bytes += n - header
                }
            }
            backend.enableReceive()
        } else {
            let pump: @Sendable () -> Void = { [unowned backend] in
                let backend = backend   // one strong reference per wake-up, not per frame
                while true {
                    for i in 0..<256 {
                        guard case .sent = (try? backend.send(out, more: i < 255)) ?? .wouldBlock else {
                            try? backend.flush()
                            return   // the writable handler comes back
                        }
                        counter.frames += 1
                        counter.bytes += size
                    }
                    try? backend.flush()
                    if counter.frames & 0xfff == 0 { break }
                }
                loop.execute { counter.resume?() }
            }
            counter.resume = pump
            backend.setWritableHandler(pump)
            loop.execute(pump)
        }
        print("ready")
        fflush(nil)
        try loop.run()
        print("frames \(counter.frames) bytes \(counter.bytes) seconds \(String(format: "%.3f", Date().timeIntervalSince(start)))")
    }

    final class Counter: @unchecked Sendable {
        var frames = 0
        var bytes = 0
        var resume: (@Sendable () -> Void)?
    }
}
