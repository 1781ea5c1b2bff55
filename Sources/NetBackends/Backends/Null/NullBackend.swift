import CNetBackends
#if canImport(Glibc)
import Glibc
#endif

/// `null[,generate=SIZE]`: the benchmark peer, as DPDK's net_null. It takes every frame it
/// is sent and discards it (counted in `statistics`); with `generate=SIZE` it hands out a
/// SIZE-byte Ethernet/IPv4/UDP frame (`NullFrame`) each time it is asked, as fast as they
/// are taken. An eventfd that is always readable announces the endless supply, so that the
/// loop's level-triggered wake-ups (and receive disabling) work as for any descriptor.
public final class NullBackend: NetBackend, @unchecked Sendable {
    public static let kind = BackendKind(
        name: "null", prefixes: ["null"],
        summary: "discards what it is sent; generate=SIZE hands out SIZE-byte UDP frames without end (benchmarks)",
        check: { (spec) throws(NetBackendError) in _ = try NullBackend.generateSize(spec) },
        open: { (spec, loop) throws(NetBackendError) in try NullBackend(spec: spec, eventLoop: loop) }
    )

    /// SIZE of the frames handed out (without header); nil: receive is always empty.
    public let generateSize: Int?
    /// The always-readable eventfd, owned by its source (closed on cancel).
    private var ready: EventSource?
    /// The frame, after room for the longest virtio-net header (a zero one).
    private let frame: UnsafeMutableRawPointer

    static func generateSize(_ spec: BackendSpec) throws(NetBackendError) -> Int? {
        let r = SpecReader(spec)
        let size = try r.int("generate", in: NullFrame.minimumLength...maximumFrameLength)
        try r.finish(kind: "null")
        return size
    }

    public init(spec: BackendSpec, eventLoop: NetEventLoop) throws(NetBackendError) {
        generateSize = try Self.generateSize(spec)
        let header = VirtioNetHeader.mergeableLength
        frame = .allocate(byteCount: header + (generateSize ?? 0), alignment: 64)
        frame.initializeMemory(as: UInt8.self, repeating: 0, count: header)
        super.init(spec: spec, kind: "null", name: spec.name, eventLoop: eventLoop)
        guard let size = generateSize else { return }
        NullFrame.build(into: frame + header, length: size)
        do {
            let fd = try Syscall.check("eventfd", device: name) { eventfd(1, Int32(EFD_NONBLOCK | EFD_CLOEXEC)) }
            ready = try eventLoop.watch(fd: fd, name: name, ownsDescriptor: true) { [weak self] _ in self?.notifyReceive() }
        } catch {
            throw .system(error)
        }
    }

    deinit {
        ready?.cancel()
        frame.deallocate()
    }

    public override func watchReceive(_ on: Bool) {
        if on { ready?.enable(.read) } else { ready?.disable(.read) }
    }

    /// It takes whatever it is given, GSO and partial checksums included: nothing is looked at.
    public override var capabilities: VirtioNetFeatures { VirtioNetFeatures.hostOffloads }
    public override var supportedHeaderLengths: [Int] { [0, 10, 12] }

    public override func configure(features: VirtioNetFeatures, vnetHeaderLength: Int) throws(NetBackendError) -> Int {
        // num_buffers is 1 in the 12-byte form (virtio 1.2, 5.1.6.4); the rest stays zero.
        frame.storeBytes(of: UInt16(vnetHeaderLength == 12 ? 1 : 0).littleEndian, toByteOffset: 10, as: UInt16.self)
        return vnetHeaderLength
    }

    public override func send(_ frame: UnsafeBufferPointer<iovec>, more: Bool) throws(NetBackendError) -> SendResult {
        let length = IOVectors.length(of: frame)
        statistics.frames &+= 1
        statistics.bytes &+= UInt64(length)
        return .sent(length)
    }

    public override func receive(into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> ReceiveResult {
        guard let size = generateSize else { return .empty }
        let header = vnetHeaderLength
        let start = frame + VirtioNetHeader.mergeableLength - header
        return deliver(start, length: header + size, into: buffers)
    }

    public override func peekReceiveLength() throws(NetBackendError) -> Int {
        generateSize.map { $0 + vnetHeaderLength } ?? 0
    }

    public override func close() {
        super.close()
        ready?.cancel()
        ready = nil
    }
}
