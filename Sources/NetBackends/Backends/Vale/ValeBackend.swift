#if canImport(Glibc)
import Glibc
#endif

/// `valeX:PORT[,switch=PATH]`: a port of a switch that `netbe switch` hosts in another
/// process (seed: a port of netmap's VALE switch). At open it connects to the switch's
/// control socket (`SwitchControl`; default path as the daemon's), attaches PORT and gets
/// the port's rings (a sealed memfd) and two eventfds; frames then move through shared
/// memory, many per kick. No daemon there is an error, a name in use is EBUSY.
///
/// When the daemon goes away the port shows link down, counts what it is given as
/// `no_peer`, and re-attaches by itself (logged) once a daemon serves the socket again.
/// The rings carry a 12-byte virtio-net header; a frontend that uses 0 or 10 bytes gets
/// its frames converted here. What the frontend accepts is reported to the switch, which
/// cuts and checksums whatever the port did not accept.
public final class ValeBackend: NetBackend, @unchecked Sendable {
    public static let kind = BackendKind(
        name: "vale", prefixes: ["vale"],
        summary: "port of a VALE-style switch hosted by `netbe switch` (valeX:PORT[,switch=PATH])",
        check: { (spec) throws(NetBackendError) in _ = try Options(spec) },
        open: { (spec, loop) throws(NetBackendError) in try ValeBackend(spec: spec, eventLoop: loop) }
    )

    struct Options {
        let switchName: String
        let portName: String
        let socketPath: String

        init(_ spec: BackendSpec) throws(NetBackendError) {
            let reader = SpecReader(spec)
            let path = try reader.string("switch")
            try reader.finish(kind: "vale")
            let parts = spec.name.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, parts[0].hasPrefix("vale"), SwitchServer.validPortName(String(parts[0])),
                  SwitchServer.validPortName(String(parts[1])) else {
                throw .badSpec("bad spec '\(spec.text)': '\(spec.name)' is not valeX:PORT (PORT: 1 to 32 of [A-Za-z0-9_.-])")
            }
            switchName = String(parts[0])
            portName = String(parts[1])
            if let path { socketPath = path } else { socketPath = try SwitchControl.defaultSocketPath() }
        }
    }

    /// One attachment: the control connection, the rings, the kicks.
    private final class Link {
        let control: Int32
        let memory: SharedRingMemory
        let transmit: NetmapRingSender
        let receive: NetmapRingReceiver
        let kick: RingKick
        let wake: RingKick
        var wakeSource: EventSource?
        var controlSource: EventSource?

        init(control: Int32, memory: SharedRingMemory, transmit: NetmapRingSender, receive: NetmapRingReceiver, kick: RingKick, wake: RingKick) {
            self.control = control
            self.memory = memory
            self.transmit = transmit
            self.receive = receive
            self.kick = kick
            self.wake = wake
        }

        func close() {
            wakeSource?.cancel()
            controlSource?.cancel()
            kick.close()
            wake.close()
            Glibc.close(control)
        }
    }

    let options: Options
    @exclusivity(unchecked) private var link: Link? { didSet { current = link.map { Unmanaged.passUnretained($0) } } }
    /// `link` for the per-frame paths: reached without a retain and release per frame
    /// (`link` keeps it alive; both change on the loop thread only).
    @exclusivity(unchecked) private var current: Unmanaged<Link>?
    @exclusivity(unchecked) private var receiveOn = false
    @exclusivity(unchecked) private var waitingForRoom = false
    /// The frontend's header length; the rings' is always 12.
    @exclusivity(unchecked) private var frontendHeader = SwitchControl.ringHeaderLength
    private var reportedFeatures: VirtioNetFeatures = []
    private var retry: OneShotTimer?
    private var closed = false
    // For frontends with another header length: a frame is staged here and converted.
    private let scratch: UnsafeMutableRawPointer
    private let scratchSize = maximumFrameLength + VirtioNetHeader.mergeableLength + 64
    private let outVector: UnsafeMutablePointer<iovec>
    private let headerBuffer = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 16)
    private static let maximumParts = 64

    public init(spec: BackendSpec, eventLoop: NetEventLoop) throws(NetBackendError) {
        options = try Options(spec)
        scratch = .allocate(byteCount: scratchSize, alignment: 64)
        outVector = .allocate(capacity: Self.maximumParts + 1)
        outVector.initialize(repeating: iovec(), count: Self.maximumParts + 1)
        super.init(spec: spec, kind: "vale", name: "\(options.switchName):\(options.portName)", eventLoop: eventLoop)
        do throws(SystemCallError) {
            retry = try eventLoop.makeOneShotTimer(name: "vale \(name) re-attach") { [weak self] in self?.reattach() }
        } catch {
            throw .system(error)
        }
        do {
            try install(try Self.connect(options, name: name))
        } catch {
            retry?.cancel()
            throw error
        }
    }

    deinit {
        close()
        scratch.deallocate()
        outVector.deallocate()
        headerBuffer.deallocate()
    }

    // MARK: attaching

    private static func connect(_ o: Options, name: String) throws(NetBackendError) -> Link {
        let control: Int32
        do { control = try SwitchControl.connect(o.socketPath) } catch {
            if error.errno == ENOENT || error.errno == ECONNREFUSED {
                throw .deviceGone("\(name): no switch daemon at \(o.socketPath) (start one: netbe switch \(o.switchName))")
            }
            throw .system(error)
        }
        do throws(NetBackendError) {
            let reply = try SwitchControl.request(control, "attach \(o.switchName) \(o.portName)", device: name)
            guard reply.fds.count == 3 else {
                for d in reply.fds { Glibc.close(d) }
                throw .deviceGone("\(name): the switch sent \(reply.fds.count) descriptors, not 3")
            }
            let kick = RingKick(fd: reply.fds[1]), wake = RingKick(fd: reply.fds[2])
            let memory: SharedRingMemory
            do { memory = try SharedRingMemory.attach(fd: reply.fds[0]) } catch {
                kick.close(); wake.close()
                throw error
            }
            let layout: NetmapInterfaceLayout
            do { layout = try memory.memory.interface(at: 0) } catch {
                kick.close(); wake.close()
                throw .deviceGone("\(name): the switch's rings make no sense: \(error)")
            }
            guard layout.transmit.count == 1, layout.receive.count == 1 else {
                kick.close(); wake.close()
                throw .deviceGone("\(name): the switch's memory has \(layout.transmit.count) TX and \(layout.receive.count) RX rings")
            }
            _ = fcntl(control, F_SETFL, fcntl(control, F_GETFL) | O_NONBLOCK)
            return Link(control: control, memory: memory, transmit: NetmapRingSender(layout.transmit[0]),
                        receive: NetmapRingReceiver(layout.receive[0]), kick: kick, wake: wake)
        } catch {
            Glibc.close(control)
            throw error
        }
    }

    private func install(_ l: Link) throws(NetBackendError) {
        do {
            l.wakeSource = try eventLoop.watch(fd: l.wake.fd, name: "vale \(name) wake") { [weak self] _ in self?.woken() }
            l.controlSource = try eventLoop.watch(fd: l.control, name: "vale \(name) control") { [weak self] _ in self?.controlReadable() }
            l.controlSource?.enable(.read)
        } catch {
            l.close()
            throw .system(error)
        }
        link = l
        waitingForRoom = false
        report()
        updateInterest()
        if receiveOn { try? l.wake.signal() }
    }

    /// Tells the switch what the frontend accepts.
    private func report() {
        guard let link else { return }
        try? SwitchControl.send(link.control, "features \(reportedFeatures.rawValue)", device: name)
    }

    /// The control connection has something: the daemon went away (EOF), or says more.
    private func controlReadable() {
        guard let link else { return }
        let gone: Bool
        do { gone = try SwitchControl.receive(link.control, device: name, dontWait: true) == nil } catch { gone = true }
        guard gone else { return }
        link.close()
        self.link = nil
        logger.warning("the switch at \(options.socketPath) went away: \(name) is down, re-attaching")
        notifyLinkState(false)
        if waitingForRoom { waitingForRoom = false; notifyWritable() }
        try? retry?.arm(milliseconds: 100)
    }

    private func reattach() {
        guard link == nil, !closed else { return }
        do {
            try install(try Self.connect(options, name: name))
            logger.notice("re-attached \(name) to the switch at \(options.socketPath)")
            notifyLinkState(true)
        } catch {
            logger.debug("re-attach \(name): \(error)")
            try? retry?.arm(milliseconds: 250)
        }
    }

    public override var isLinkUp: Bool { link != nil }

    // MARK: readiness

    private func woken() {
        guard let link else { return }
        // Take the kick before looking at the ring, never after: a kick for slots handed
        // back after the look then stays readable. (Consumed after the writable handler,
        // it swallowed the switch's one kick for slots freed while that handler filled the
        // ring: both sides then slept, the ring half free; bench/switch saw such stalls.)
        // With receive on, `receive` takes it at the empty ring and looks again itself.
        if !receiveOn { link.wake.consume() }
        if waitingForRoom && link.transmit.refresh() > 0 {
            waitingForRoom = false
            updateInterest()
            notifyWritable()
        }
        if receiveOn {
            notifyReceive()
        } else {
            updateInterest()
        }
    }

    private func updateInterest() {
        guard let source = link?.wakeSource else { return }
        if receiveOn || waitingForRoom { source.enable(.read) } else { source.disable(.read) }
    }

    public override func watchReceive(_ on: Bool) {
        receiveOn = on
        updateInterest()
        if on, let link { try? link.wake.signal() }   // frames may have come while off
    }

    public override var hasBufferedFrames: Bool { (current?._withUnsafeGuaranteedRef { $0.receive.filledSlots } ?? 0) > 0 }

    // MARK: negotiation

    public override var capabilities: VirtioNetFeatures { Negotiation.inSoftware }
    public override var supportedHeaderLengths: [Int] { [0, 10, 12] }
    public override var preferredHeaderLength: Int { SwitchControl.ringHeaderLength }

    public override func configure(features: VirtioNetFeatures, vnetHeaderLength: Int) throws(NetBackendError) -> Int {
        frontendHeader = vnetHeaderLength
        reportedFeatures = vnetHeaderLength > 0 ? features : []
        report()
        return vnetHeaderLength
    }

    // MARK: frames

    public override func send(_ frame: UnsafeBufferPointer<iovec>, more: Bool) throws(NetBackendError) -> SendResult {
        guard let current else {
            statistics.countDrop(.noPeer)
            return .dropped(.noPeer)
        }
        var failure: NetBackendError?
        let result = current._withUnsafeGuaranteedRef { link in
            do throws(NetBackendError) { return try send(frame, more: more, on: link) } catch { failure = error; return .wouldBlock }
        }
        if let failure { throw failure }
        return result
    }

    private func send(_ frame: UnsafeBufferPointer<iovec>, more: Bool, on link: Link) throws(NetBackendError) -> SendResult {
        let outcome: NetmapSendOutcome
        if frontendHeader == SwitchControl.ringHeaderLength {
            outcome = link.transmit.send(frame)
        } else {
            guard let count = withRingHeader(frame) else {
                statistics.countDrop(.malformed)
                return .dropped(.malformed)
            }
            outcome = link.transmit.send(UnsafeBufferPointer(start: outVector, count: count))
        }
        switch outcome {
        case .queued:
            if !more, link.transmit.publish() {
                do { try link.kick.signal() } catch { throw .system(error) }
            }
            return .sent(IOVectors.length(of: frame))
        case .noSpace:
            // Let the switch see what is queued, then wait for its kick.
            if link.transmit.publish() {
                do { try link.kick.signal() } catch { throw .system(error) }
            }
            waitingForRoom = true
            updateInterest()
            return .wouldBlock
        case .tooLarge, .peerFault:
            let reason = outcome.dropReason!
            statistics.countDrop(reason)
            return .dropped(reason)
        }
    }

    /// `frame` behind a 12-byte header converted from the frontend's in `scratch`: the
    /// parts in `outVector`; nil when the frame is shorter than its header or in too many parts.
    private func withRingHeader(_ frame: UnsafeBufferPointer<iovec>) -> Int? {
        let h = frontendHeader
        var skip = h
        // The frontend's header may span parts: gather it first.
        var copied = 0
        var count = 1
        for part in frame {
            guard let base = part.iov_base else { continue }
            var offset = 0
            if skip > 0 {
                let n = min(skip, part.iov_len)
                (scratch + 16 + copied).copyMemory(from: base, byteCount: n)
                copied += n
                skip -= n
                offset = n
            }
            if offset < part.iov_len {
                guard count <= Self.maximumParts else { return nil }
                outVector[count] = iovec(iov_base: base + offset, iov_len: part.iov_len - offset)
                count += 1
            }
        }
        guard skip == 0 else { return nil }
        VirtioNetHeader.convert(from: h > 0 ? UnsafeRawPointer(scratch + 16) : nil, fromLength: h, to: scratch, toLength: SwitchControl.ringHeaderLength)
        outVector[0] = iovec(iov_base: scratch, iov_len: SwitchControl.ringHeaderLength)
        return count
    }

    public override func flush() throws(NetBackendError) {
        guard let current else { return }
        let kick = current._withUnsafeGuaranteedRef { link in link.transmit.publish() ? link.kick : nil }
        guard let kick else { return }
        do { try kick.signal() } catch { throw .system(error) }
    }

    public override func receive(into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> ReceiveResult {
        guard let current else { return .empty }
        var failure: NetBackendError?
        let result = current._withUnsafeGuaranteedRef { link in
            do throws(NetBackendError) { return try receive(into: buffers, from: link) } catch { failure = error; return .empty }
        }
        if let failure { throw failure }
        return result
    }

    private func receive(into buffers: UnsafeBufferPointer<iovec>, from link: Link) throws(NetBackendError) -> ReceiveResult {
        for attempt in 0..<2 {
            let result: ReceiveResult
            if frontendHeader == SwitchControl.ringHeaderLength {
                result = link.receive.receive(into: buffers)
            } else {
                var v = iovec(iov_base: scratch, iov_len: scratchSize)
                result = withUnsafePointer(to: &v) { link.receive.receive(into: UnsafeBufferPointer(start: $0, count: 1)) }
                if case .frame(let n) = result {
                    try releaseIfMany(link)
                    return deliverConverted(n, into: buffers)
                }
            }
            switch result {
            case .empty:
                guard attempt == 0 else { return .empty }
                // Hand slots back, reset our eventfd, look again (a kick in between is kept).
                // No kick for the slots: the switch never waits for room on our RX ring (what
                // does not fit is dropped there), so a kick would only wake it for nothing.
                link.receive.release()
                link.wake.consume()
                if waitingForRoom && link.transmit.refresh() > 0 { try? link.wake.signal() }
            case .dropped(_, let reason):
                statistics.countDrop(reason)
                try releaseIfMany(link)
                return result
            case .frame:
                try releaseIfMany(link)
                return result
            }
        }
        return .empty
    }

    /// Hands consumed slots back while frames keep coming (the switch fills as we drain);
    /// unkicked, as above.
    @inline(__always)
    private func releaseIfMany(_ link: Link) throws(NetBackendError) {
        if link.receive.unreleasedFrames >= SwitchRingPort.releaseEvery { link.receive.release() }
    }

    /// The ring's frame in `scratch` (`n` bytes, 12-byte header) copied out with the
    /// frontend's header length.
    private func deliverConverted(_ n: Int, into buffers: UnsafeBufferPointer<iovec>) -> ReceiveResult {
        let ring = SwitchControl.ringHeaderLength, h = frontendHeader
        guard n >= ring else {
            statistics.countDrop(.truncated)
            return .dropped(length: n, reason: .truncated)
        }
        let total = n - ring + h
        guard IOVectors.length(of: buffers) >= total else {
            statistics.countDrop(.noSpace)
            return .dropped(length: total, reason: .noSpace)
        }
        if h > 0 {
            // Converted aside first: the two headers overlap in `scratch`.
            VirtioNetHeader.convert(from: scratch, fromLength: ring, to: headerBuffer, toLength: h)
            (scratch + ring - h).copyMemory(from: headerBuffer, byteCount: h)
        }
        var source = UnsafeRawPointer(scratch + ring - h)
        var left = total
        for part in buffers where left > 0 {
            guard let base = part.iov_base else { continue }
            let k = min(left, part.iov_len)
            base.copyMemory(from: source, byteCount: k)
            source += k
            left -= k
        }
        return .frame(length: total)
    }

    public override func close() {
        super.close()
        guard !closed else { return }
        closed = true
        retry?.cancel()
        link?.close()
        link = nil
    }
}
