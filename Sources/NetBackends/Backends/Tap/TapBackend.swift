import CNetBackends
#if canImport(Glibc)
import Glibc
#endif

/// A Linux tap (`tap*`, and `vmnet*` as in bhyve). Options (CONTRACT.md): `netns=`,
/// `mtu=`, `mac=`, `up=on|off`, `offload=on|off`, `vnet=on|off`, `hdrlen=10|12`.
///
/// Receive: a tap read truncates silently into a short buffer and tun has no FIONREAD, so
/// a frame goes straight into the caller's buffers only when they can hold the largest
/// frame; otherwise it lands in a bounce buffer and is copied, or dropped whole.
/// With a virtio-net header on the fd but a frontend header length of 0, the backend
/// strips and adds a zeroed 10-byte header itself, with offloads off.
public final class TapBackend: NetBackend, @unchecked Sendable {
    public static let kind = BackendKind(
        name: "tap", prefixes: ["tap", "vmnet"],
        summary: "Linux tap device via /dev/net/tun, with virtio-net header and offloads",
        availability: {
            access("/dev/net/tun", F_OK) == 0 ? .available : .unavailable("no /dev/net/tun")
        },
        check: { (spec) throws(NetBackendError) in _ = try TapConfiguration(spec) },
        open: { (spec, loop) throws(NetBackendError) in try TapBackend(spec: spec, eventLoop: loop) }
    )

    // Per-frame state, touched on the loop thread only: no run-time exclusivity check
    // (see BackendStatistics).
    @exclusivity(unchecked) private var fd: Int32
    /// The interface existed before we attached (persistent); it is left in place.
    public let attachedToExisting: Bool
    public let namespace: String?
    private let vnet: Bool
    private let offloadsAllowed: Bool
    private let headerPreference: Int
    private let probed: TapOffloads
    /// Bytes of header on the fd that the frontend does not see (10 or 0).
    @exclusivity(unchecked) private var hiddenHeader = 0
    /// The fd's current header size, to skip redundant ioctls on renegotiation.
    private var fdHeaderLength = VirtioNetHeader.baseLength
    private var carrier = true

    private let bounceSize = maximumFrameLength + VirtioNetHeader.mergeableLength + 64
    private let bounce: UnsafeMutableRawPointer
    @exclusivity(unchecked) private var bounceLength = -1      // a peeked frame waiting in `bounce`, or -1
    private let sendVector: UnsafeMutablePointer<iovec>
    private let sendVectorCapacity = 1025
    // Read-only after initialisation: shared by every tap.
    nonisolated(unsafe) private static let zeroHeader: UnsafeMutableRawPointer = {
        let p = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 16)
        p.initializeMemory(as: UInt8.self, repeating: 0, count: 16)
        return p
    }()

    public init(spec: BackendSpec, eventLoop: NetEventLoop) throws(NetBackendError) {
        let c = try TapConfiguration(spec)
        let (netns, vnet, offload, hdrlen, options) = (c.netns, c.vnet, c.offload, c.headerLength, c.options)
        let device = try NetworkNamespace.run(in: netns) { () throws(NetBackendError) -> TapDevice in try TapDevice.open(options) }
        fd = device.fd
        attachedToExisting = device.attached
        namespace = netns
        self.vnet = vnet
        offloadsAllowed = offload
        headerPreference = vnet ? hdrlen : 0
        probed = device.offloads
        hiddenHeader = vnet ? VirtioNetHeader.baseLength : 0
        bounce = .allocate(byteCount: bounceSize, alignment: 64)
        sendVector = .allocate(capacity: sendVectorCapacity)
        let label = netns.map { "\($0):\(device.name)" } ?? device.name
        super.init(spec: spec, kind: "tap", name: label, eventLoop: eventLoop)
        do {
            try watch(fd: fd)
        } catch {
            close()
            throw error
        }
    }

    deinit {
        close()
        bounce.deallocate()
        sendVector.deallocate()
    }

    public override var capabilities: VirtioNetFeatures {
        guard vnet else { return [] }
        return offloadsAllowed ? probed.features : [.mrgRxbuf]
    }

    public override var supportedHeaderLengths: [Int] { vnet ? [0, 10, 12] : [0] }
    public override var prefersSuperFrames: Bool { vnet }
    public override var preferredHeaderLength: Int { headerPreference }

    /// What TUNSETOFFLOAD found this kernel supports (before `offload=off`).
    public var probedFeatures: VirtioNetFeatures { probed.features }

    public override func configure(features: VirtioNetFeatures, vnetHeaderLength length: Int) throws(NetBackendError) -> Int {
        guard vnet else { return 0 }
        let fdLength = length == 0 ? VirtioNetHeader.baseLength : length
        if fdLength != fdHeaderLength {
            // A peeked frame carries the old header size: it cannot be delivered as is.
            if bounceLength >= 0 { statistics.countDrop(.malformed) }
            bounceLength = -1
            var size = Int32(fdLength)
            do { try Syscall.ioctl(fd, "TUNSETVNETHDRSZ", cnb_TUNSETVNETHDRSZ, &size, device: name) } catch { throw .system(error) }
            fdHeaderLength = fdLength
        } else if length == 0 && bounceLength >= 0 && (bounce.load(as: UInt8.self) != 0 || VirtioNetHeader.rawIsGSO(bounce)) {
            // Offloads are turning off: a peeked GSO or partial-checksum frame cannot go to this frontend.
            statistics.countDrop(.offloadUnsupported)
            bounceLength = -1
        }
        let offloads = length == 0 ? [] : TapOffloads(accepting: features)
        do {
            try Syscall.ioctl(fd, "TUNSETOFFLOAD", cnb_TUNSETOFFLOAD, value: UInt(offloads.rawValue), device: name)
        } catch { throw .system(error) }
        hiddenHeader = length == 0 ? VirtioNetHeader.baseLength : 0
        return length
    }

    /// TUNSETCARRIER: the interface shows NO-CARRIER while the far side is away.
    public override func setCarrier(_ up: Bool) throws(NetBackendError) {
        guard up != carrier else { return }
        var on: Int32 = up ? 1 : 0
        do { try Syscall.ioctl(fd, "TUNSETCARRIER", cnb_TUNSETCARRIER, &on, device: name) } catch { throw .system(error) }
        carrier = up
    }

    /// The error for a failed read or write. A vanished device's descriptor reports an
    /// error condition for ever: it is unwatched at once, so that a frontend that
    /// ignores the error (the README's loop) is not called again and again.
    @inline(__always)
    private func gone(_ e: SystemCallError) -> NetBackendError {
        switch e.errno {
        case EBADFD, ENXIO, ENODEV:
            stopWatching()
            return .deviceGone("tap \(name) went away (interface deleted or its namespace removed): \(e)")
        default:
            return .system(e)
        }
    }

    public override func send(_ frame: UnsafeBufferPointer<iovec>, more: Bool) throws(NetBackendError) -> SendResult {
        guard var vector = frame.baseAddress, frame.count > 0 else { fatalError("tap send: an empty iovec list is no frame") }
        var count = frame.count
        if hiddenHeader != 0 {
            // The fd wants a header the frontend does not have: put a zeroed one in front.
            guard count < sendVectorCapacity else { statistics.countDrop(.malformed); return .dropped(.malformed) }
            sendVector[0] = iovec(iov_base: Self.zeroHeader, iov_len: hiddenHeader)
            (sendVector + 1).update(from: vector, count: count)
            vector = UnsafePointer(sendVector)
            count += 1
        }
        let result: IOResult
        do {
            // One buffer: write(2) skips the kernel's iovec import, measurably cheaper per
            // frame (bench/tap-relay, perf: copy_iovec_from_user, import_iovec).
            if count == 1 {
                result = try Syscall.write(fd, vector[0].iov_base, vector[0].iov_len, device: name)
            } else {
                result = try Syscall.writev(fd, vector, count, device: name)
            }
        } catch {
            switch error.errno {
            case EIO:
                statistics.countDrop(.linkDown)
                return .dropped(.linkDown)
            case EINVAL, EMSGSIZE:   // EFAULT never gets here: Syscall traps, it is the caller's bug
                statistics.countDrop(.malformed)
                return .dropped(.malformed)
            default:
                throw gone(error)
            }
        }
        switch result {
        case .wouldBlock:
            armWritable()
            return .wouldBlock
        case .processed(let n):
            statistics.frames &+= 1
            statistics.bytes &+= UInt64(n)
            return .sent(n - hiddenHeader)
        }
    }

    public override func receive(into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> ReceiveResult {
        if bounceLength < 0 && hiddenHeader == 0 {
            if IOVectors.length(of: buffers) >= bounceSize - 64 {
                // Zero-copy: the caller's buffers hold any frame the tap can produce.
                let r: IOResult
                do {
                    // One buffer (the relay's case): read(2), cheaper than readv as in `send`.
                    if buffers.count == 1 {
                        r = try Syscall.read(fd, buffers[0].iov_base, buffers[0].iov_len, device: name)
                    } else {
                        r = try Syscall.readv(fd, buffers.baseAddress!, buffers.count, device: name)
                    }
                } catch { throw gone(error) }
                guard case .processed(let n) = r, n > 0 else { return .empty }
                // Shorter than a header and an Ethernet header: counted, never delivered.
                guard n >= vnetHeaderLength + 14 else {
                    statistics.countDrop(.truncated)
                    return .dropped(length: n, reason: .truncated)
                }
                return .frame(length: n)
            }
        }
        if bounceLength < 0 {
            guard try fillBounce() else { return .empty }
        }
        let length = bounceLength - hiddenHeader
        bounceLength = -1
        guard length >= vnetHeaderLength + 14 else {
            statistics.countDrop(.truncated)
            return .dropped(length: max(length, 0), reason: .truncated)
        }
        return deliver(bounce + hiddenHeader, length: length, into: buffers)
    }

    /// A peeked frame waits in `bounce`, where no event announces it.
    public override var hasBufferedFrames: Bool { bounceLength >= 0 }

    public override func peekReceiveLength() throws(NetBackendError) -> Int {
        if bounceLength < 0 {
            guard try fillBounce() else { return 0 }
        }
        // A frame too short to deliver still waits: `receive` drops it, counted.
        return max(bounceLength - hiddenHeader, 1)
    }

    private func fillBounce() throws(NetBackendError) -> Bool {
        let r: IOResult
        do { r = try Syscall.read(fd, bounce, bounceSize, device: name) } catch { throw gone(error) }
        guard case .processed(let n) = r, n > 0 else { return false }
        bounceLength = n
        return true
    }

    public override func close() {
        super.close()
        if fd >= 0 {
            _ = Glibc.close(fd)
            fd = -1
        }
    }
}
