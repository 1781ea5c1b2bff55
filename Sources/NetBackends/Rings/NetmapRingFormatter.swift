import CNetBackends

/// Lays out netmap-format memory the way the kernel does for a registered port, for
/// rings shared between processes (a switch and its ports): a `netmap_if` at offset 0
/// listing `transmitRings` TX rings then `receiveRings` RX rings, each ring's header and
/// slots, then every slot's own buffer. TX rings start empty with all but one slot free
/// for the user side (head 0, tail slots-1), RX rings with nothing to read (head = tail = 0),
/// as after NETMAP_REQ_REGISTER.
public struct NetmapRingFormatter: Sendable {
    public let transmitRings: Int
    public let receiveRings: Int
    public let slots: Int
    public let bufferSize: Int

    public init(transmitRings: Int, receiveRings: Int, slots: Int, bufferSize: Int) {
        precondition(transmitRings >= 0 && receiveRings >= 0 && transmitRings + receiveRings >= 1)
        precondition(slots >= 2 && slots <= 1 << 20 && bufferSize >= 1 && bufferSize <= 65535)
        self.transmitRings = transmitRings
        self.receiveRings = receiveRings
        self.slots = slots
        self.bufferSize = bufferSize
    }

    private static func align(_ n: Int, _ to: Int) -> Int { (n + to - 1) / to * to }

    var ringCount: Int { transmitRings + receiveRings }
    var firstRingOffset: Int { Self.align(NetmapLayout.interfaceHeaderSize + 8 * ringCount, 256) }
    var ringStride: Int { Self.align(NetmapLayout.ringHeaderSize + NetmapLayout.slotSize * slots, 256) }
    var buffersOffset: Int { Self.align(firstRingOffset + ringStride * ringCount, 4096) }

    /// Bytes the layout needs (a multiple of the page size).
    public var size: Int { Self.align(buffersOffset + bufferSize * slots * ringCount, 4096) }

    /// Writes the layout into `memory` (at least `size` bytes, not yet shared); returns
    /// the offset of the `netmap_if`, 0.
    @discardableResult
    public func format(_ memory: NetmapRingMemory, name: String = "netbe") -> Int {
        precondition(memory.size >= size, "memory smaller than the layout")
        let base = memory.base
        base.initializeMemory(as: UInt8.self, repeating: 0, count: buffersOffset)
        name.utf8.prefix(15).enumerated().forEach { base.storeBytes(of: $0.element, toByteOffset: $0.offset, as: UInt8.self) }
        base.storeBytes(of: UInt32(cnb_NETMAP_API), toByteOffset: 16, as: UInt32.self)
        base.storeBytes(of: UInt32(transmitRings), toByteOffset: Int(cnb_netmap_if_tx_rings_offset), as: UInt32.self)
        base.storeBytes(of: UInt32(receiveRings), toByteOffset: Int(cnb_netmap_if_rx_rings_offset), as: UInt32.self)
        for r in 0..<ringCount {
            let offset = firstRingOffset + r * ringStride
            base.storeBytes(of: Int64(offset), toByteOffset: NetmapLayout.interfaceHeaderSize + 8 * r, as: Int64.self)
            let ring = base + offset
            let isTransmit = r < transmitRings
            ring.storeBytes(of: Int64(buffersOffset - offset), toByteOffset: Int(cnb_netmap_ring_buf_ofs_offset), as: Int64.self)
            ring.storeBytes(of: UInt32(slots), toByteOffset: Int(cnb_netmap_ring_num_slots_offset), as: UInt32.self)
            ring.storeBytes(of: UInt32(bufferSize), toByteOffset: Int(cnb_netmap_ring_nr_buf_size_offset), as: UInt32.self)
            ring.storeBytes(of: UInt16(isTransmit ? r : r - transmitRings), toByteOffset: Int(cnb_netmap_ring_ringid_offset), as: UInt16.self)
            ring.storeBytes(of: UInt16(isTransmit ? 0 : 1), toByteOffset: Int(cnb_netmap_ring_dir_offset), as: UInt16.self)
            ring.storeBytes(of: UInt32(isTransmit ? slots - 1 : 0), toByteOffset: Int(cnb_netmap_ring_tail_offset), as: UInt32.self)
            for i in 0..<slots {
                ring.storeBytes(of: UInt32(r * slots + i), toByteOffset: NetmapLayout.ringHeaderSize + NetmapLayout.slotSize * i, as: UInt32.self)
            }
        }
        return 0
    }
}
