#if canImport(Glibc)
import Glibc
#endif

/// Fuzzing entry point (Fuzz/, `@_spi(Fuzzing)`): bytes a `stream` peer could send go
/// through `StreamInput` as `StreamBackend.receive` drives it: read from a socket in
/// chunks, whole `[u32 length][frame]` records handed out and consumed until the stream
/// is declared bad or ends. Input: byte 0 picks the record limit (with or without the
/// 12-byte header) and the chunk size, byte 1 how many times the rest is sent (so that
/// the 256 KiB buffer fills and compacts), the rest is the stream.
@_spi(Fuzzing) public enum StreamDeframerFuzzing {
    // libFuzzer calls from one thread.
    nonisolated(unsafe) private static let input = (plain: StreamInput(maximumLength: maximumFrameLength),
                                vnet: StreamInput(maximumLength: maximumFrameLength + VirtioNetHeader.mergeableLength))
    private static let sockets: (reader: Int32, writer: Int32) = {
        var fds: [Int32] = [-1, -1]
        fuzzCheck(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &fds) == 0, "socketpair failed")
        return (fds[0], fds[1])
    }()

    public static func run(_ data: UnsafeRawBufferPointer) {
        guard data.count >= 2 else { return }
        let input = data[0] & 1 == 0 ? Self.input.plain : Self.input.vnet
        let chunk = [1, 3, 4, 7, 64, 1500, 4096, 65536][Int(data[0] >> 1) & 7]
        let repeats = 1 + Int(data[1] & 63)
        let stream = UnsafeRawBufferPointer(rebasing: data[2...])
        input.reset()
        let total = stream.count * repeats
        var sent = 0      // bytes written to the socket
        var pending = 0   // of which the socket still holds
        reading: while true {
            switch input.next() {
            case .frame(let bytes, let length):
                fuzzCheck(length > 0 && length <= input.maximumLength, "frame of \(length) bytes handed out")
                fuzzCheck(input.holdsWholeFrame, "a frame was handed out but holdsWholeFrame is false")
                // Touch the first and last byte, so that a frame outside the buffer shows (ASan).
                _ = bytes.load(as: UInt8.self) &+ bytes.load(fromByteOffset: length - 1, as: UInt8.self)
                input.consume(length)
            case .bad:
                fuzzCheck(input.holdsWholeFrame, "a bad header but holdsWholeFrame is false")
                break reading
            case .needMore:
                fuzzCheck(!input.holdsWholeFrame, "needMore but holdsWholeFrame is true")
                if pending == 0 {
                    // The peer sends its next chunk only when the deframer asks for more.
                    guard sent < total else { break reading }
                    let n = min(chunk, total - sent)
                    var at = 0
                    while at < n {
                        let offset = (sent + at) % stream.count
                        let w = write(sockets.writer, stream.baseAddress! + offset, min(n - at, stream.count - offset))
                        fuzzCheck(w > 0, "write to the fuzzing socket failed")
                        at += w
                    }
                    sent += n
                    pending = n
                }
                // One read per "need more", as the backend does; it must find room.
                let before = input.bufferedBytes
                guard case .read = try? input.fill(from: sockets.reader, device: "fuzz") else {
                    fatalError("needMore with \(before) bytes buffered, yet fill read nothing")
                }
                pending -= input.bufferedBytes - before
            }
        }
        drain()
    }

    /// Empties the socket between inputs.
    private static func drain() {
        var scratch = [UInt8](repeating: 0, count: 65536)
        while read(sockets.reader, &scratch, scratch.count) > 0 {}
    }
}
