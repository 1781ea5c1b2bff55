import CNetBackends

/// netmap's layout numbers as Swift uses them (declared and pinned in cnb_netmap.h).
public enum NetmapLayout {
    public static let ringHeaderSize = Int(cnb_netmap_ring_slots_offset)
    public static let slotSize = Int(cnb_netmap_slot_size)
    public static let interfaceHeaderSize = Int(cnb_netmap_if_ring_ofs_offset)
    public static let moreFragments = UInt16(cnb_NS_MOREFRAG)
    /// NETMAP_MAX_FRAGS: a frame spans at most this many slots.
    public static let maximumFragments = Int(cnb_NETMAP_MAX_FRAGS)
}

/// A ring or interface description that does not fit the memory it claims to live in.
public struct NetmapLayoutError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Memory holding netmap-format rings that this code does not own: the mmap of
/// `/dev/netmap` for a registered port, or a memfd shared with another process. It is
/// only (base, size); every offset, count and size read from inside is checked against
/// them once, here, before any ring is used.
public struct NetmapRingMemory: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let size: Int

    public init(base: UnsafeMutableRawPointer, size: Int) {
        self.base = base
        self.size = size
    }

    /// The ring whose header starts `offset` bytes into the memory; its geometry (slot
    /// count, buffer size, where its buffers lie) is read once and must fit the memory.
    public func ring(at offset: Int) throws(NetmapLayoutError) -> NetmapRingView {
        guard offset >= 0, offset % 8 == 0, offset <= size - NetmapLayout.ringHeaderSize else {
            throw NetmapLayoutError("ring at offset \(offset) lies outside the \(size)-byte region")
        }
        let ring = base + offset
        let bufferOffset = ring.loadUnaligned(fromByteOffset: Int(cnb_netmap_ring_buf_ofs_offset), as: Int64.self)
        let slots = ring.load(fromByteOffset: Int(cnb_netmap_ring_num_slots_offset), as: UInt32.self)
        let bufferSize = ring.load(fromByteOffset: Int(cnb_netmap_ring_nr_buf_size_offset), as: UInt32.self)
        let offsetMask = ring.loadUnaligned(fromByteOffset: Int(cnb_netmap_ring_offset_mask_offset), as: UInt64.self)
        guard slots >= 2, Int(slots) <= (size - offset - NetmapLayout.ringHeaderSize) / NetmapLayout.slotSize else {
            throw NetmapLayoutError("ring at offset \(offset): \(slots) slots do not fit the region")
        }
        // A slot's len is 16 bits: larger buffers could never be filled.
        guard bufferSize >= 1, bufferSize <= 65535 else {
            throw NetmapLayoutError("ring at offset \(offset): buffer size \(bufferSize) is not 1...65535")
        }
        let buffers = Int64(offset).addingReportingOverflow(bufferOffset)
        guard !buffers.overflow, buffers.partialValue >= 0, buffers.partialValue < Int64(size) else {
            throw NetmapLayoutError("ring at offset \(offset): its buffers (buf_ofs \(bufferOffset)) lie outside the region")
        }
        // Offsets inside buffers (NETMAP_REQ_OPT_OFFSETS) are never asked for here.
        guard offsetMask == 0 else {
            throw NetmapLayoutError("ring at offset \(offset): buffer offsets (offset_mask \(offsetMask)) are not supported")
        }
        let count = (size - Int(buffers.partialValue)) / Int(bufferSize)
        guard count >= 1 else { throw NetmapLayoutError("ring at offset \(offset): no whole buffer fits the region") }
        let head = ring.load(fromByteOffset: Int(cnb_netmap_ring_head_offset), as: UInt32.self)
        let tail = ring.load(fromByteOffset: Int(cnb_netmap_ring_tail_offset), as: UInt32.self)
        guard head < slots, tail < slots else {
            throw NetmapLayoutError("ring at offset \(offset): head \(head) or tail \(tail) is not below \(slots)")
        }
        return NetmapRingView(
            ring: ring, slotCount: slots, bufferSize: Int(bufferSize),
            buffers: base + Int(buffers.partialValue), bufferCount: UInt32(min(count, Int(UInt32.max))),
            initialHead: head, initialTail: tail)
    }

    /// The rings of the `netmap_if` at `offset`, in netmap's order (NIC TX, host TX, NIC RX,
    /// host RX), each validated by `ring(at:)`.
    public func interface(at offset: Int) throws(NetmapLayoutError) -> NetmapInterfaceLayout {
        guard offset >= 0, offset % 8 == 0, offset <= size - NetmapLayout.interfaceHeaderSize else {
            throw NetmapLayoutError("netmap_if at offset \(offset) lies outside the \(size)-byte region")
        }
        let nif = base + offset
        func count(_ field: Int) -> Int { Int(nif.load(fromByteOffset: field, as: UInt32.self)) }
        let tx = count(Int(cnb_netmap_if_tx_rings_offset)), rx = count(Int(cnb_netmap_if_rx_rings_offset))
        let hostTX = count(Int(cnb_netmap_if_host_tx_rings_offset)), hostRX = count(Int(cnb_netmap_if_host_rx_rings_offset))
        let total = tx + hostTX + rx + hostRX
        guard tx <= 1024, rx <= 1024, hostTX <= 1024, hostRX <= 1024,
              total <= (size - offset - NetmapLayout.interfaceHeaderSize) / 8 else {
            throw NetmapLayoutError("netmap_if at offset \(offset): \(total) rings do not fit the region")
        }
        var rings: [NetmapRingView] = []
        rings.reserveCapacity(total)
        for i in 0..<total {
            let relative = nif.loadUnaligned(fromByteOffset: NetmapLayout.interfaceHeaderSize + 8 * i, as: Int64.self)
            let absolute = Int64(offset).addingReportingOverflow(relative)
            guard !absolute.overflow, absolute.partialValue >= 0, absolute.partialValue <= Int64(size) else {
                throw NetmapLayoutError("netmap_if ring \(i): offset \(relative) lies outside the region")
            }
            rings.append(try ring(at: Int(absolute.partialValue)))
        }
        return NetmapInterfaceLayout(
            transmit: Array(rings[0..<tx]), hostTransmit: Array(rings[tx..<(tx + hostTX)]),
            receive: Array(rings[(tx + hostTX)..<(tx + hostTX + rx)]), hostReceive: Array(rings[(tx + hostTX + rx)...]))
    }
}

/// A port's rings as its `netmap_if` lists them.
public struct NetmapInterfaceLayout: Sendable {
    public let transmit: [NetmapRingView]
    public let hostTransmit: [NetmapRingView]
    public let receive: [NetmapRingView]
    public let hostReceive: [NetmapRingView]
}

/// One ring's validated geometry. Built only by `NetmapRingMemory`, so every buffer index
/// below `bufferCount` addresses `bufferSize` bytes inside the memory.
public struct NetmapRingView: @unchecked Sendable {
    public let ring: UnsafeMutableRawPointer
    public let slotCount: UInt32
    public let bufferSize: Int
    /// Buffer 0: `ring + buf_ofs`; buffer i is `i * bufferSize` further (netmap_user.h NETMAP_BUF).
    public let buffers: UnsafeMutableRawPointer
    public let bufferCount: UInt32
    /// head and tail as they were when the ring was attached (both below `slotCount`).
    public let initialHead: UInt32
    public let initialTail: UInt32

    var slots: UnsafeMutableRawPointer { ring + NetmapLayout.ringHeaderSize }
    var headPointer: UnsafeMutablePointer<UInt32> { (ring + Int(cnb_netmap_ring_head_offset)).assumingMemoryBound(to: UInt32.self) }
    var curPointer: UnsafeMutablePointer<UInt32> { (ring + Int(cnb_netmap_ring_cur_offset)).assumingMemoryBound(to: UInt32.self) }
    var tailPointer: UnsafeMutablePointer<UInt32> { (ring + Int(cnb_netmap_ring_tail_offset)).assumingMemoryBound(to: UInt32.self) }
}
