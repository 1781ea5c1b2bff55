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
        open: { (spec, loop) throws(NetBackendError) in try SlirpBackend.open(spec, on: loop) }
    )

    /// Opens the kind a spec asks for: the helper-process backend or the in-process one.
    public static func open(_ spec: BackendSpec, on loop: EventLoop) throws(NetBackendError) -> NetBackend {
        let r = SpecReader(spec, repeatable: ["hostfwd"])
        let configuration = try SlirpConfiguration(r)
        try r.finish(kind: "slirp")
        if configuration.helper {
            return try SlirpHelperBackend(spec: spec, configuration: configuration, eventLoop: loop)
        }
        return try SlirpBackend(spec: spec, configuration: configuration, eventLoop: loop)
    }

    private let stack: SlirpStack
    private let contiguous: UnsafeMutableRawPointer
    private let contiguousSize = maximumFrameLength

    /// The in-process stack, whatever `helper=` says (the helper process uses this).
    public init(spec: BackendSpec, configuration: SlirpConfiguration, eventLoop: EventLoop) throws(NetBackendError) {
        stack = try SlirpStack(configuration, specText: spec.text, eventLoop: eventLoop)
        contiguous = .allocate(byteCount: contiguousSize, alignment: 64)
        super.init(spec: spec, kind: "slirp", name: "slirp(\(SlirpConfiguration.text(configuration.network)))", eventLoop: eventLoop)
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
    }

    /// Frames dropped because the frontend did not take them fast enough.
    public var queueDrops: UInt64 { stack.queue.overflowDrops }

    public override func send(_ frame: UnsafeBufferPointer<iovec>, more: Bool) throws(NetBackendError) -> SendResult {
        let length = IOVectors.length(of: frame)
        guard length >= 14 else { statistics.countDrop(.truncated); return .dropped(.truncated) }
        guard length <= contiguousSize else { statistics.countDrop(.malformed); return .dropped(.malformed) }
        if frame.count == 1 {
            stack.input(frame[0].iov_base, length: length)
        } else {
            // libslirp takes one contiguous buffer.
            IOVectors.gather(frame, into: contiguous)
            stack.input(contiguous, length: length)
        }
        statistics.frames &+= 1
        statistics.bytes &+= UInt64(length)
        return .sent(length)
    }

    public override func receive(into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> ReceiveResult {
        guard let n = stack.queue.pop(into: buffers) else { return .empty }
        if n < 0 {
            statistics.countDrop(.noSpace)
            return .dropped(length: -n, reason: .noSpace)
        }
        return .frame(length: n)
    }

    public override func peekReceiveLength() throws(NetBackendError) -> Int { stack.queue.headLength }

    public override func close() {
        super.close()
        stack.close()
    }
}
