import CNetBackends
import Foundation
import NetBackends
import Testing

/// netmap's ABI as the shim declares it, against the numbers of netmap's published
/// sys/net/netmap.h (NETMAP_API 14, x86-64). The C side pins the same with
/// _Static_assert; this checks what Swift sees.
@Suite struct NetmapABITests {
    @Test func requestStructuresHaveNetmapsLayout() {
        #expect(MemoryLayout<cnb_nmreq_header>.size == 88)
        #expect(MemoryLayout<cnb_nmreq_header>.offset(of: \.nr_reqtype) == 2)
        #expect(MemoryLayout<cnb_nmreq_header>.offset(of: \.nr_name) == 8)
        #expect(MemoryLayout<cnb_nmreq_header>.offset(of: \.nr_options) == 72)
        #expect(MemoryLayout<cnb_nmreq_header>.offset(of: \.nr_body) == 80)
        #expect(MemoryLayout<cnb_nmreq_register>.size == 56)
        #expect(MemoryLayout<cnb_nmreq_register>.offset(of: \.nr_tx_rings) == 24)
        #expect(MemoryLayout<cnb_nmreq_register>.offset(of: \.nr_mem_id) == 32)
        #expect(MemoryLayout<cnb_nmreq_register>.offset(of: \.nr_mode) == 36)
        #expect(MemoryLayout<cnb_nmreq_register>.offset(of: \.nr_flags) == 48)
        #expect(MemoryLayout<cnb_nmreq_port_hdr>.size == 8)
        #expect(cnb_NIOCCTRL == 0xC058_6997)
        #expect(cnb_NIOCTXSYNC == 0x6994)
        #expect(cnb_NIOCRXSYNC == 0x6995)
        #expect(cnb_NETMAP_API == 14)
        #expect(cnb_NETMAP_REQ_REGISTER == 1 && cnb_NETMAP_REQ_PORT_HDR_SET == 6 && cnb_NETMAP_REQ_PORT_HDR_GET == 7)
        #expect(cnb_NR_REG_ALL_NIC == 1)
    }

    @Test func ringStructuresHaveNetmapsLayout() {
        #expect(MemoryLayout<cnb_netmap_slot>.size == 16)
        #expect(MemoryLayout<cnb_netmap_slot>.offset(of: \.len) == 4)
        #expect(MemoryLayout<cnb_netmap_slot>.offset(of: \.flags) == 6)
        #expect(MemoryLayout<cnb_netmap_slot>.offset(of: \.ptr) == 8)
        #expect(cnb_NS_MOREFRAG == 0x20)
        #expect(cnb_NETMAP_MAX_FRAGS == 64)
        #expect(cnb_netmap_ring_buf_ofs_offset == 0)
        #expect(cnb_netmap_ring_num_slots_offset == 8)
        #expect(cnb_netmap_ring_nr_buf_size_offset == 12)
        #expect(cnb_netmap_ring_head_offset == 20)
        #expect(cnb_netmap_ring_cur_offset == 24)
        #expect(cnb_netmap_ring_tail_offset == 28)
        #expect(cnb_netmap_ring_offset_mask_offset == 56)
        #expect(cnb_netmap_ring_slots_offset == 256)
        #expect(cnb_netmap_if_tx_rings_offset == 24)
        #expect(cnb_netmap_if_rx_rings_offset == 28)
        #expect(cnb_netmap_if_host_tx_rings_offset == 36)
        #expect(cnb_netmap_if_host_rx_rings_offset == 40)
        #expect(cnb_netmap_if_ring_ofs_offset == 56)
        #expect(NetmapLayout.ringHeaderSize == 256 && NetmapLayout.slotSize == 16 && NetmapLayout.interfaceHeaderSize == 56)
    }

    /// The formatter lays memory out as the kernel does after NETMAP_REQ_REGISTER, read
    /// back here through netmap's raw offsets; attaching finds the same rings.
    @Test func formattedMemoryReadsBackAsANetmapInterface() throws {
        let format = NetmapRingFormatter(transmitRings: 2, receiveRings: 3, slots: 64, bufferSize: 2048)
        let memory = GuardedMemory(size: format.size)
        format.format(memory.memory, name: "port7")
        let base = memory.base
        #expect(String(decoding: UnsafeRawBufferPointer(start: base, count: 5), as: UTF8.self) == "port7")
        #expect(base.load(fromByteOffset: 24, as: UInt32.self) == 2)
        #expect(base.load(fromByteOffset: 28, as: UInt32.self) == 3)
        let layout = try memory.memory.interface(at: 0)
        #expect(layout.transmit.count == 2 && layout.receive.count == 3 && layout.hostTransmit.isEmpty)
        for (i, ring) in (layout.transmit + layout.receive).enumerated() {
            let offset = Int(base.load(fromByteOffset: 56 + 8 * i, as: Int64.self))
            let r = base + offset
            #expect(ring.ring == r)
            #expect(r.load(fromByteOffset: 8, as: UInt32.self) == 64)
            #expect(r.load(fromByteOffset: 12, as: UInt32.self) == 2048)
            #expect(r.load(fromByteOffset: 18, as: UInt16.self) == (i < 2 ? 0 : 1), "dir")
            #expect(r.load(fromByteOffset: 28, as: UInt32.self) == (i < 2 ? 63 : 0), "tail")
            // Buffer address rule: ring + buf_ofs + index * nr_buf_size.
            let index = (r + 256 + 16 * 5).load(as: UInt32.self)
            let bufOfs = Int(r.load(as: Int64.self))
            #expect(r + bufOfs + Int(index) * 2048 + 2048 <= base + format.size)
            #expect(ring.buffers == r + bufOfs)
        }
    }

    /// Geometry that does not fit the memory is refused at attach, before any use.
    @Test func attachRefusesRingsOutsideTheirMemory() throws {
        let kernel = TestKernelRing(slots: 8, bufferSize: 64, transmit: true)
        let base = kernel.storage.base
        let memory = kernel.storage.memory
        #expect(throws: NetmapLayoutError.self) { try memory.ring(at: memory.size - 8) }
        #expect(throws: NetmapLayoutError.self) { try memory.ring(at: -8) }
        base.storeBytes(of: UInt32(1 << 30), toByteOffset: 8, as: UInt32.self)  // num_slots
        #expect(throws: NetmapLayoutError.self) { try memory.ring(at: 0) }
        base.storeBytes(of: UInt32(8), toByteOffset: 8, as: UInt32.self)
        base.storeBytes(of: Int64(1 << 40), toByteOffset: 0, as: Int64.self)  // buf_ofs
        #expect(throws: NetmapLayoutError.self) { try memory.ring(at: 0) }
        base.storeBytes(of: Int64(-4096), toByteOffset: 0, as: Int64.self)
        #expect(throws: NetmapLayoutError.self) { try memory.ring(at: 0) }
        base.storeBytes(of: Int64(kernel.buffersOffset), toByteOffset: 0, as: Int64.self)
        base.storeBytes(of: UInt32(0), toByteOffset: 12, as: UInt32.self)  // nr_buf_size
        #expect(throws: NetmapLayoutError.self) { try memory.ring(at: 0) }
        base.storeBytes(of: UInt32(64), toByteOffset: 12, as: UInt32.self)
        kernel.tail = 8
        #expect(throws: NetmapLayoutError.self) { try memory.ring(at: 0) }
        kernel.tail = 7
        #expect(try memory.ring(at: 0).bufferCount == 8)
    }
}
