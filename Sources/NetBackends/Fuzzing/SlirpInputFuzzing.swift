/// Fuzzing entry point (Fuzz/, `@_spi(Fuzzing)`): a message as the slirp helper reads it
/// from netbe (`SlirpHelperLink`: a 12-byte virtio-net header, then the frame) goes
/// through `SlirpStack.input` as the helper calls it: partial checksums finished, TCP GSO
/// frames cut by `gso_size`, each result handed to libslirp. A new stack each time, restricted
/// (`restrict=on`: nothing leaves the virtual network); its answers are discarded.
/// Input: byte 0 bit 0 says whether the message has its header; then the message.
@_spi(Fuzzing) public enum SlirpInputFuzzing {
    private static let spec = try! BackendSpec(parsing: "slirp,restrict=on")
    private static let configuration = try! SlirpConfiguration(SpecReader(spec))

    public static func run(_ data: UnsafeRawBufferPointer) {
        guard data.count >= 1 else { return }
        let withHeader = data[0] & 1 != 0
        let header = withHeader ? VirtioNetHeader.mergeableLength : 0
        guard data.count >= 1 + header else { return }
        // A new stack each time: libslirp keeps state (fragments, connections) that only
        // its timers clear, and a crash must reproduce from its input alone.
        let loop = try! NetEventLoop()
        let stack = try! SlirpStack(configuration, specText: spec.text, eventLoop: loop)
        defer { stack.close(); withExtendedLifetime(loop) {} }
        let length = data.count - 1 - header
        // The frame in a buffer of exactly its size, so that a read outside it shows (ASan).
        let message = UnsafeMutableRawPointer.allocate(byteCount: max(1, data.count - 1), alignment: 1)
        defer { message.deallocate() }
        message.copyMemory(from: data.baseAddress! + 1, byteCount: data.count - 1)
        switch stack.input(frame: message + header, length: length, header: withHeader ? UnsafeRawPointer(message) : nil) {
        case .segmented(let n): fuzzCheck(n >= 1, "a super-frame cut into no segment")
        case .passed, .dropped: break
        }
    }
}
