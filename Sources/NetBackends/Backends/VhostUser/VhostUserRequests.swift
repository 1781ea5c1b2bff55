#if canImport(Glibc)
import Glibc
#endif

/// The requests this server answers (docs/interop/vhost-user.rst, "Front-end message
/// types"), each checked for its payload size and its queue index before use. A request
/// it does not know, or one that breaks the rules, ends the connection with the reason.
extension VhostUserBackend {
    /// Handles one message; returns why the connection must end, or nil.
    func handle(request code: UInt32, flags: UInt32, payload: UnsafeRawBufferPointer, channel c: VhostUserChannel) -> String? {
        guard flags & VhostUserMessage.versionMask == VhostUserMessage.version else {
            return "message \(code) has protocol version \(flags & VhostUserMessage.versionMask), not 1"
        }
        guard let request = VhostUserRequest(rawValue: code) else {
            return "unsupported vhost-user request \(code) (\(payload.count) payload bytes)"
        }
        func u64() -> UInt64? { payload.count >= 8 ? payload.loadUnaligned(as: UInt64.self) : nil }
        /// vhost_vring_state: a queue index and a number.
        func state() -> (queue: SplitVirtqueue, num: UInt32)? {
            guard payload.count >= 8 else { return nil }
            let i = payload.loadUnaligned(as: UInt32.self)
            guard i < 2 else { return nil }
            return (i == 0 ? rx : tx, payload.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        }
        let needsAck = flags & VhostUserMessage.needReplyFlag != 0 && ackedProtocol & VhostUserProtocolFeature.replyAck != 0
        var replied = false
        do {
            switch request {
            case .getFeatures:
                try c.reply(code, u64: offeredFeatures)
                replied = true
            case .setFeatures:
                guard let f = u64() else { return "SET_FEATURES without its 8-byte payload" }
                let extra = f & ~offeredFeatures
                guard extra == 0 else { return "SET_FEATURES asks for features never offered (0x\(String(extra, radix: 16)))" }
                ackedFeatures = f
                applyFeatures()
            case .setOwner:
                break
            case .resetOwner:
                resetDevice()
                ackedFeatures = 0
                applyFeatures()
                updateLink()
            case .getProtocolFeatures:
                try c.reply(code, u64: VhostUserProtocolFeature.replyAck)
                replied = true
            case .setProtocolFeatures:
                guard let f = u64() else { return "SET_PROTOCOL_FEATURES without its 8-byte payload" }
                guard f & ~VhostUserProtocolFeature.replyAck == 0 else { return "SET_PROTOCOL_FEATURES asks for 0x\(String(f, radix: 16)), offered 0x8 (REPLY_ACK)" }
                ackedProtocol = f
            case .getQueueNum:
                try c.reply(code, u64: 1)
                replied = true
            case .setMemTable:
                if let why = setMemoryTable(payload, c) { return why }
            case .setLogBase, .setLogFD:
                return "\(request) asks for dirty-page logging, which is not offered (no LOG_ALL, no migration)"
            case .setVringNum:
                guard let s = state(), s.queue.setSize(Int(s.num)) else { return "SET_VRING_NUM with a bad queue or size (a power of two up to 32768)" }
            case .setVringAddr:
                guard payload.count >= 40 else { return "SET_VRING_ADDR payload of \(payload.count) bytes, not 40" }
                let i = payload.loadUnaligned(as: UInt32.self)
                guard i < 2 else { return "SET_VRING_ADDR for queue \(i): this device has queues 0 and 1" }
                let q = i == 0 ? rx : tx
                if let why = q.setAddresses(desc: payload.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
                                            avail: payload.loadUnaligned(fromByteOffset: 24, as: UInt64.self),
                                            used: payload.loadUnaligned(fromByteOffset: 16, as: UInt64.self), memory: memory) {
                    return "SET_VRING_ADDR: \(why)"
                }
            case .setVringBase:
                guard let s = state(), s.num <= 0xffff else { return "SET_VRING_BASE with a bad queue or index" }
                s.queue.lastAvail = UInt16(s.num)
            case .getVringBase:
                guard let s = state() else { return "GET_VRING_BASE for a queue this device does not have" }
                // Stops the queue: its kick is no longer watched, what was used is signalled.
                s.queue.signalIfNeeded()
                s.queue.started = false
                if s.queue.kickFD >= 0 { _ = Glibc.close(s.queue.kickFD); s.queue.kickFD = -1 }
                rewatchKicks()
                updateLink()
                try c.reply(code, index: UInt32(s.queue.index), num: UInt32(s.queue.lastAvail))
                replied = true
            case .setVringKick, .setVringCall, .setVringErr:
                guard let v = u64() else { return "\(request) without its 8-byte payload" }
                let i = v & 0xff
                guard i < 2 else { return "\(request) for queue \(i): this device has queues 0 and 1" }
                let q = i == 0 ? rx : tx
                let noFD = v & VhostUserMessage.noDescriptorFlag != 0
                guard noFD ? c.fds.isEmpty : c.fds.count == 1 else { return "\(request) with \(c.fds.count) descriptors" }
                if noFD && request == .setVringKick { return "SET_VRING_KICK without a descriptor (a polling frontend) is not supported" }
                let fd = noFD ? -1 : c.takeFD(0)
                switch request {
                case .setVringKick:
                    if q.kickFD >= 0 { _ = Glibc.close(q.kickFD) }
                    q.kickFD = fd
                    q.started = true
                    // Without protocol features a queue runs as soon as it is kicked.
                    if ackedFeatures & VirtioRingFeature.protocolFeatures == 0 { q.enabled = true }
                    rewatchKicks()
                    updateLink()
                case .setVringCall:
                    if q.callFD >= 0 { _ = Glibc.close(q.callFD) }
                    q.callFD = fd
                default:
                    if fd >= 0 { _ = Glibc.close(fd) }   // netbe reports no queue errors
                }
            case .setVringEnable:
                guard let s = state(), s.num <= 1 else { return "SET_VRING_ENABLE with a bad queue or value" }
                s.queue.enabled = s.num == 1
                rewatchKicks()
                updateLink()
            }
            if needsAck && !replied { try c.reply(code, u64: 0) }
        } catch {
            return "replying to \(request): \(error)"
        }
        return nil
    }

    /// The negotiated bits that shape the datapath.
    func applyFeatures() {
        let f = ackedFeatures
        mergeable = f & VirtioNetFeatures.mrgRxbuf.rawValue != 0
        guestHeaderLength = (mergeable || f & VirtioRingFeature.version1 != 0) ? 12 : 10
        for q in [rx, tx] {
            q.eventIndex = f & VirtioRingFeature.eventIndex != 0
            q.indirect = f & VirtioRingFeature.indirectDescriptors != 0
        }
        guestTakes = VirtioNetFeatures(rawValue: f).intersection(VirtioNetFeatures.guestOffloads.union(.hostOffloads)).mirrored
        // What the guest declined is cut and checksummed by the relay's egress toward it.
        peerAccepts(guestTakes)
        logger.info("\(name): guest features \(VirtioRingFeature.describe(f)), header \(guestHeaderLength) bytes")
    }

    /// SET_MEM_TABLE: u32 count, u32 padding, then per region guest address, size, user
    /// address and mmap offset (u64 each), one descriptor per region.
    private func setMemoryTable(_ payload: UnsafeRawBufferPointer, _ c: VhostUserChannel) -> String? {
        guard payload.count >= 8 else { return "SET_MEM_TABLE payload of \(payload.count) bytes" }
        let count = Int(payload.loadUnaligned(as: UInt32.self))
        guard count >= 1, count <= VhostUserMessage.maximumRegions, payload.count >= 8 + 32 * count else {
            return "SET_MEM_TABLE with \(count) regions in \(payload.count) bytes"
        }
        guard c.fds.count == count else { return "SET_MEM_TABLE with \(count) regions and \(c.fds.count) descriptors" }
        memory.unmapAll()
        for i in 0..<count {
            let at = 8 + 32 * i
            do {
                try memory.add(guestAddress: payload.loadUnaligned(fromByteOffset: at, as: UInt64.self),
                               size: payload.loadUnaligned(fromByteOffset: at + 8, as: UInt64.self),
                               userAddress: payload.loadUnaligned(fromByteOffset: at + 16, as: UInt64.self),
                               offset: payload.loadUnaligned(fromByteOffset: at + 24, as: UInt64.self),
                               fd: c.fds[i], device: name)
            } catch {
                memory.unmapAll()
                return "SET_MEM_TABLE: \(error)"
            }
        }
        // Rings live in guest memory: map them again through the new table.
        for q in [rx, tx] {
            if let why = q.map(memory) { return "after SET_MEM_TABLE: \(why)" }
        }
        logger.info("\(name): guest memory: \(count) region(s), \(memory.regions.reduce(0) { $0 + $1.size } >> 20) MiB")
        return nil
    }
}
