import CSlirp
#if canImport(Glibc)
import Glibc
#endif

/// User-mode networking through libslirp (`slirp`, `user`): the guest gets a NATed
/// network (10.0.2.0/24 by default, gateway .2 which also reaches the host's loopback,
/// DHCP from .15, DNS .3) without any privilege. Options: see `SlirpConfiguration`.
///
/// By default (`helper=on`) libslirp runs in a helper process and this process sees a
/// `SlirpHelperBackend`; with `helper=off` the stack runs here, on the event loop, as
/// this class.
public final class SlirpBackend: NetBackend, @unchecked Sendable {
    public static let kind = BackendKind(
        name: "slirp", prefixes: ["slirp", "user"],
        summary: "user-mode NAT via libslirp, in a privilege-separated helper (helper=off: in-process)",
        availability: { .available },
        check: { (spec) throws(NetBackendError) in
            let r = SpecReader(spec, repeatable: ["hostfwd"])
            _ = try SlirpConfiguration(r)
            try r.finish(kind: "slirp")
        },
        open: { (spec, loop) throws(NetBackendError) in try SlirpBackend.open(spec, on: loop) }
    )

    /// Opens the kind a spec asks for: the helper-process backend or the in-process one.
    public static func open(_ spec: BackendSpec, on loop: NetEventLoop) throws(NetBackendError) -> NetBackend {
        let r = SpecReader(spec, repeatable: ["hostfwd"])
        let configuration = try SlirpConfiguration(r)
        try r.finish(kind: "slirp")
        if configuration.helper {
            return try SlirpHelperBackend(spec: spec, configuration: configuration, eventLoop: loop)
        }
        return try SlirpBackend(spec: spec, configuration: configuration, eventLoop: loop)
    }

    /// The offloads libslirp's frames can get here: partial checksums and TSO frames from
    /// the frontend are finished and cut in software (`SlirpStack.input`), and runs of
    /// TCP segments to the frontend leave as one GSO frame (`TCPCoalescer`).
    public static let offloads: VirtioNetFeatures = [.csum, .hostTSO4, .hostTSO6, .guestCsum, .guestTSO4, .guestTSO6]

    private let stack: SlirpStack
    private let contiguous: UnsafeMutableRawPointer
    private let contiguousSize = maximumFrameLength + VirtioNetHeader.mergeableLength
    /// The super-frame's virtio-net header and protocol headers, built per run, and the
    /// iovecs describing it before it is copied to the frontend's buffers.
    private let built: UnsafeMutableRawPointer
    private let runVectors: UnsafeMutablePointer<iovec>
    private var coalesceIPv4 = false
    private var coalesceIPv6 = false

    /// The in-process stack, whatever `helper=` says (the helper process uses this).
    public init(spec: BackendSpec, configuration: SlirpConfiguration, eventLoop: NetEventLoop) throws(NetBackendError) {
        stack = try SlirpStack(configuration, specText: spec.text, eventLoop: eventLoop)
        contiguous = .allocate(byteCount: contiguousSize, alignment: 64)
        built = .allocate(byteCount: TCPCoalescer.scratchSize, alignment: 64)
        runVectors = .allocate(capacity: 1 + TCPCoalescer.maximumSegments)
        runVectors.initialize(repeating: iovec(), count: 1 + TCPCoalescer.maximumSegments)
        super.init(spec: spec, kind: "slirp", name: "slirp(\(SlirpConfiguration.text(configuration.network)))", eventLoop: eventLoop)
        stack.queue.statistics = statistics
        do {
            try watch(fd: stack.queue.readyFD)
        } catch {
            close()
            throw error
        }
    }

    deinit {
        close()
        contiguous.deallocate()
        built.deallocate()
        runVectors.deallocate()
    }

    /// Pure ACKs not delivered because a later ACK in the queue covered them.
    public private(set) var acksSkipped: UInt64 = 0

    /// Frames dropped because the frontend did not take them fast enough.
    public var queueDrops: UInt64 { stack.queue.overflowDrops }

    public override var capabilities: VirtioNetFeatures { Self.offloads }
    public override var supportedHeaderLengths: [Int] { [0, 10, 12] }

    public override func configure(features: VirtioNetFeatures, vnetHeaderLength length: Int) throws(NetBackendError) -> Int {
        coalesceIPv4 = length > 0 && features.isSuperset(of: [.guestCsum, .guestTSO4])
        coalesceIPv6 = length > 0 && features.isSuperset(of: [.guestCsum, .guestTSO6])
        return length
    }

    public override func send(_ frame: UnsafeBufferPointer<iovec>, more: Bool) throws(NetBackendError) -> SendResult {
        let length = IOVectors.length(of: frame)
        let h = vnetHeaderLength
        guard length >= h + 14 else { statistics.countDrop(.truncated); return .dropped(.truncated) }
        guard length <= contiguousSize else { statistics.countDrop(.malformed); return .dropped(.malformed) }
        // libslirp and the segmenter take one contiguous buffer.
        var bytes = UnsafeRawPointer(contiguous)
        if frame.count == 1, let base = frame[0].iov_base {
            bytes = UnsafeRawPointer(base)
        } else {
            IOVectors.gather(frame, into: contiguous)
        }
        switch stack.input(frame: bytes + h, length: length - h, header: h > 0 ? bytes : nil) {
        case .passed:
            break
        case .segmented:
            statistics.softwareSegmented &+= 1
        case .dropped(let reason):
            statistics.countDrop(reason)
            return .dropped(reason)
        }
        statistics.frames &+= 1
        statistics.bytes &+= UInt64(length)
        return .sent(length)
    }

    public override func receive(into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> ReceiveResult {
        let h = vnetHeaderLength
        let queue = stack.queue
        if h == 0 || queue.isEmpty {
            guard let n = queue.pop(into: buffers) else { return .empty }
            if n < 0 {
                statistics.countDrop(.noSpace)
                return .dropped(length: -n, reason: .noSpace)
            }
            return .frame(length: n)
        }
        let room = IOVectors.length(of: buffers) - h
        if coalesceIPv4 || coalesceIPv6 {
            let skip = TCPCoalescer.supersededAcks(in: queue)
            if skip > 0 {
                queue.removeFirst(skip)
                acksSkipped &+= UInt64(skip)
            }
        }
        if coalesceIPv4 || coalesceIPv6,
           let run = TCPCoalescer.run(in: queue, maximumLength: room, ipv4: coalesceIPv4, ipv6: coalesceIPv6) {
            return deliver(run, into: buffers)
        }
        // One frame, behind a header that asks for nothing (num_buffers 1 in the long form).
        let (bytes, length) = queue.frame(at: 0)
        VirtioNetHeader.convert(from: nil, fromLength: 0, to: built, toLength: h)
        var out = IOVectorWriter(buffers)
        let fits = out.write(built, h) && out.write(bytes, length)
        queue.removeFirst(1)
        guard fits else {
            statistics.countDrop(.noSpace)
            return .dropped(length: h + length, reason: .noSpace)
        }
        return .frame(length: h + length)
    }

    /// Hands a run of segments over as one super-frame: header, merged headers, payloads.
    private func deliver(_ run: TCPCoalescer.Run, into buffers: UnsafeBufferPointer<iovec>) -> ReceiveResult {
        let queue = stack.queue
        let n = TCPCoalescer.describe(run, in: queue, headerLength: vnetHeaderLength, scratch: built, into: runVectors)
        // The run was sized to the buffers, so every piece fits.
        var out = IOVectorWriter(buffers)
        for i in 0..<n { _ = out.write(runVectors[i].iov_base, runVectors[i].iov_len) }
        queue.removeFirst(run.count)
        return .frame(length: out.written)
    }

    public override func peekReceiveLength() throws(NetBackendError) -> Int {
        let h = vnetHeaderLength
        let queue = stack.queue
        if h > 0, coalesceIPv4 || coalesceIPv6,
           let run = TCPCoalescer.run(in: queue, maximumLength: maximumFrameLength, ipv4: coalesceIPv4, ipv6: coalesceIPv6) {
            return h + run.frameLength
        }
        let n = queue.headLength
        return n == 0 ? 0 : n + h
    }

    public override func close() {
        super.close()
        stack.close()
    }
}
