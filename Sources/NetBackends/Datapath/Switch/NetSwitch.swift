import Logging
#if canImport(Glibc)
import Glibc
#endif

/// A learning Ethernet switch between backends on one event loop (VALE's model, in user
/// space): a library user's VMM with several NICs attaches each NIC's backend as a port;
/// `netbe switch` attaches the ports of other processes (shared rings) and `--port` specs.
///
/// - A frame's source MAC is learned behind its port (aging, bounded: `MACTable`); a
///   unicast frame to a learned MAC goes to that port only, anything else (broadcast,
///   multicast, unknown unicast, a full table) to every port but the one it came from.
/// - Each port's output is its own `Egress`: its header length and offloads are its
///   own, and a GSO or partial-checksum frame bound for a port that did not accept them
///   is cut and checksummed (`sw_segmented`).
/// - A port that would block drops that frame for itself alone (`queue_full`): one slow
///   port never stalls the others (no head-of-line blocking).
/// - A port whose backend fails is detached (logged); the others go on.
/// Call everything on the event loop's thread (or before the loop runs).
public final class NetSwitch: @unchecked Sendable {
    public let name: String
    public let eventLoop: NetEventLoop
    public let maximumPorts: Int
    public let table: MACTable
    /// Frames read from one port per wake-up before yielding to the others (each batch
    /// costs a flush, a kick per port sent to and a resume through the loop: 256 keeps
    /// that small per frame while a port's ring of 1024 holds four batches).
    @exclusivity(unchecked) public var batchLimit = 256
    /// Called after a port was detached because its backend failed (the daemon frees it).
    public var onPortFailure: (@Sendable (SwitchPort, NetBackendError) -> Void)?

    private var slots: [SwitchPort?]
    /// `slots` again, for the per-frame lookup: reached without a retain and release
    /// (`slots` owns the ports; both change together, on the loop thread).
    private let unretainedSlots: UnsafeMutablePointer<Unmanaged<SwitchPort>?>
    /// The attached ports, in attach order (what a flood walks).
    @exclusivity(unchecked) private var active: [SwitchPort] = []
    private let buffer: UnsafeMutableRawPointer
    private let bufferSize = maximumFrameLength + VirtioNetHeader.mergeableLength + 64
    private let inVector: UnsafeMutablePointer<iovec>
    private let logger: Logger

    public init(name: String, eventLoop: NetEventLoop, maximumPorts: Int = 64, tableCapacity: Int = 4096, agingSeconds: UInt32 = 300) {
        self.name = name
        self.eventLoop = eventLoop
        self.maximumPorts = maximumPorts
        table = MACTable(capacity: tableCapacity, agingSeconds: agingSeconds)
        slots = Array(repeating: nil, count: maximumPorts)
        unretainedSlots = .allocate(capacity: maximumPorts)
        unretainedSlots.initialize(repeating: nil, count: maximumPorts)
        buffer = .allocate(byteCount: bufferSize, alignment: 64)
        inVector = .allocate(capacity: 1)
        inVector.initialize(to: iovec(iov_base: buffer, iov_len: bufferSize))
        var logger = eventLoop.logger
        logger[metadataKey: "switch"] = "\(name)"
        self.logger = logger
    }

    deinit {
        for p in active { p.backend.removeHandlers() }
        buffer.deallocate()
        inVector.deallocate()
        unretainedSlots.deallocate()
    }

    /// The attached ports, in attach order.
    public var ports: [SwitchPort] { active }

    public func port(named name: String) -> SwitchPort? { active.first { $0.name == name } }

    /// The switch's clock for aging: whole seconds, monotonic (a coarse clock, cheap per batch).
    static func now() -> UInt32 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC_COARSE, &t)
        return UInt32(truncatingIfNeeded: t.tv_sec)
    }

    /// Attaches `backend` (on this switch's loop) as port `name`: negotiates its header
    /// length and what offloads the switch can do for it in software, shows it carrier, and
    /// starts receiving. EBUSY when `name` is taken, ENOSPC when every port is in use.
    /// The backend stays the caller's to close (after `detach`).
    @discardableResult
    public func attach(_ backend: NetBackend, name: String) throws(NetBackendError) -> SwitchPort {
        precondition(backend.eventLoop === eventLoop, "a port's backend must run on the switch's event loop")
        guard port(named: name) == nil else {
            throw .system(SystemCallError(call: "attach", device: "\(self.name):\(name)", errno: EBUSY,
                                          hint: "a port of that name is attached"))
        }
        guard let free = slots.firstIndex(where: { $0 == nil }) else {
            throw .system(SystemCallError(call: "attach", device: "\(self.name):\(name)", errno: ENOSPC,
                                          hint: "the switch has all its \(maximumPorts) ports in use"))
        }
        try backend.setCapabilities(Self.features(for: backend), vnetHeaderLength: backend.preferredHeaderLength)
        let port = SwitchPort(name: name, backend: backend, index: Int32(free))
        slots[free] = port
        unretainedSlots[free] = Unmanaged.passUnretained(port)
        active.append(port)
        backend.setReceiveHandler { [weak self, unowned port] in self?.pump(port) }
        backend.setLinkStateHandler { _ in }
        try? backend.setCarrier(true)
        backend.enableReceive()
        logger.info("port \(name) attached (\(backend.kind) \(backend.name), header \(backend.vnetHeaderLength), offloads \(backend.negotiatedFeatures))")
        return port
    }

    /// What a port is granted: what it offers of what the switch can do in software
    /// (finish checksums, cut TCP GSO for ports that take none). Never UDP GSO.
    static func features(for backend: NetBackend) -> VirtioNetFeatures {
        guard backend.preferredHeaderLength > 0 else { return [] }
        return backend.capabilities.intersection(Negotiation.inSoftware).withPrerequisites
    }

    /// The port's backend renegotiated (a client reported new features): its output
    /// follows. Loop thread.
    public func renegotiated(_ port: SwitchPort) {
        port.egress.renegotiated()
    }

    /// Detaches `port`: no more frames to or from it, its MACs forgotten. Does not close
    /// its backend.
    public func detach(_ port: SwitchPort) {
        guard let i = active.firstIndex(where: { $0 === port }) else { return }
        active.remove(at: i)
        slots[Int(port.index)] = nil
        unretainedSlots[Int(port.index)] = nil
        port.backend.removeHandlers()
        port.backend.disableReceive()
        table.forget(port: port.index)
        logger.info("port \(port.name) detached")
    }

    /// Detaches every port.
    public func detachAll() {
        for p in active.reversed() { detach(p) }
    }

    // MARK: forwarding

    /// The port's backend has frames: switch up to a batch of them, then flush every port
    /// that was sent to.
    func pump(_ port: SwitchPort) {
        let now = Self.now()
        let inHeader = port.backend.vnetHeaderLength
        var budget = batchLimit
        reading: while budget > 0 {
            budget -= 1
            let result: ReceiveResult
            do { result = try port.backend.receive(into: UnsafeBufferPointer(start: inVector, count: 1)) } catch {
                port.failure = error
                break
            }
            switch result {
            case .empty:
                break reading
            case .dropped(_, let reason):
                port.received.countDrop(reason)
            case .frame(let length):
                guard length >= inHeader + 14 else {
                    port.received.countDrop(.truncated)
                    continue
                }
                port.received.frames &+= 1
                port.received.bytes &+= UInt64(length - inHeader)
                let ethernet = buffer + inHeader
                let destination = MACTable.key(ethernet)
                table.learn(MACTable.key(ethernet + 6), port: port.index, now: now)
                if !MACTable.isGroup(destination) {
                    let out = table.lookup(destination, now: now)
                    if out >= 0, out < maximumPorts, let target = unretainedSlots[Int(out)] {
                        target._withUnsafeGuaranteedRef { target in
                            if target === port { port.filtered &+= 1 } else { output(to: target, length: length, headerLength: inHeader) }
                        }
                        continue
                    }
                }
                for target in active where target !== port {
                    output(to: target, length: length, headerLength: inHeader)
                }
            }
        }
        finishBatch()
    }

    @inline(__always)
    private func output(to target: SwitchPort, length: Int, headerLength: Int) {
        guard !target.failed else { return }
        do {
            let outcome = try target.egress.send(buffer, length: length, headerLength: headerLength)
            // No waiting for one port: what it cannot take now is its loss alone.
            if outcome != .done { target.egress.abandon(.queueFull) }
            target.touched = true
        } catch {
            target.failure = error
        }
    }

    /// Flushes the ports sent to; detaches the ones that failed.
    private func finishBatch() {
        var failed: [SwitchPort] = []
        for p in active {
            if p.touched {
                p.touched = false
                do { try p.egress.flush() } catch { p.failure = error }
            }
            if p.failed { failed.append(p) }
        }
        for p in failed {
            let error = p.failure!
            logger.error("port \(p.name): \(error); detaching it")
            detach(p)
            onPortFailure?(p, error)
        }
    }
}
