import Foundation
import Logging
import NetBackends
import Testing

/// What a program embedding the library relies on: its own Logger reaches every backend,
/// counters can be read from any thread, and its binary can serve as the slirp helper.
@Suite struct EmbeddingTests {
    /// A swift-log handler that keeps what it was given.
    struct CapturingHandler: LogHandler {
        let lines: Locked<[(message: String, metadata: Logger.Metadata)]>
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(level: Logger.Level, message: Logger.Message, metadata extra: Logger.Metadata?,
                 source: String, file: String, function: String, line: UInt) {
            lines.withLock { $0.append(("\(message)", metadata.merging(extra ?? [:]) { $1 })) }
        }
    }

    @Test func injectedLoggerReachesTheBackend() throws {
        let lines = Locked<[(message: String, metadata: Logger.Metadata)]>([])
        let logger = Logger(label: "embedder") { _ in CapturingHandler(lines: lines) }
        let loop = try LoopThread(try NetEventLoop(logger: logger))
        let sock = TestSocketPath("log")
        let backend = try BackendRegistry.shared.open("stream,listen=unix:\(sock.path)", on: loop.loop)
        defer { backend.close() }
        backend.setReceiveHandler { _ = try? backend.discardReceived() }
        backend.enableReceive()
        let client = try RawStreamClient(unixPath: sock.path)
        try waitUntil(5, "the backend to log the peer through the injected logger") {
            lines.current.contains { $0.message.contains("attached") }
        }
        let line = try #require(lines.current.first { $0.message.contains("attached") })
        #expect(line.metadata["backend"]?.description.hasPrefix("stream") == true)
        _ = client
        try loop.stop()
    }

    /// The loop thread counts while this thread reads snapshots; the last snapshot sees
    /// every frame. (Under ThreadSanitizer this also proves the reads are race-free.)
    @Test func statisticsSnapshotFromAnotherThread() throws {
        let loop = try LoopThread()
        let sock = TestSocketPath("stats")
        let backend = try BackendRegistry.shared.open("stream,listen=unix:\(sock.path)", on: loop.loop)
        defer { backend.close() }
        let client = try RawStreamClient(unixPath: sock.path)
        try waitUntil(5, "the peer to attach") { try loop.sync { backend.isLinkUp } }
        let total = 5000
        let frame = [UInt8](repeating: 0xff, count: 6) + [2, 0, 0, 0, 0, 1, 0x88, 0xb5] + [UInt8](repeating: 7, count: 50)
        nonisolated(unsafe) let readerClient = client   // read by that thread alone
        let reader = Thread {
            for _ in 0..<total {
                guard readerClient.readFrame() != nil else { return }
            }
        }
        reader.start()
        // Send on the loop thread, going on from the writable handler when the socket fills.
        let sent = Locked(0)
        let pump: @Sendable () -> Void = {
            while sent.current < total {
                let r = try? frame.withUnsafeBytes { try backend.send($0) }
                if r == .wouldBlock { return }
                sent.withLock { $0 += 1 }
            }
        }
        backend.setWritableHandler(pump)
        loop.loop.execute(pump)
        var seen: [UInt64] = []
        try waitUntil(10, "the snapshot to show \(total) frames") {
            let s = backend.statistics.snapshot()
            seen.append(s.frames)
            return s.frames == UInt64(total)
        }
        let last = backend.statistics.snapshot()
        #expect(last.bytes == UInt64(total * frame.count))
        #expect(last.totalDrops == 0)
        #expect(seen == seen.sorted(), "a counter read from another thread never goes back")
        try loop.stop()
    }

    @Test func helperInvocationRoundTrips() throws {
        let i = SlirpHelper.Invocation(fd: 3, parent: 4242, spec: "slirp,hostfwd=tcp::8080-:80")
        let args = i.arguments(program: "/usr/bin/myvmm")
        #expect(SlirpHelper.Invocation(args) == i)
        // Anything else is the embedding program's own command line.
        #expect(SlirpHelper.runIfRequested(arguments: ["/usr/bin/myvmm", "--disk", "a.img"]) == nil)
        #expect(SlirpHelper.Invocation(["p", "slirp-helper", "--fd", "x", "--parent", "1", "slirp"]) == nil)
        #expect(SlirpHelper.Invocation(["p", "slirp-helper", "--fd", "3", "--parent", "0", "slirp"]) == nil)
    }
}
