// virtio-net feature bits and header, named as the virtio 1.x specification names them
// (OASIS virtio v1.2, 5.1.3 "Feature bits" and 5.1.6 "Device Operation").

/// VIRTIO_NET_F_* feature bits. `host*` bits: what a backend accepts on `send`
/// (the guest transmits GSO/partial-checksum frames). `guest*` bits: what a backend
/// may hand out on `receive` once the frontend accepted them.
public struct VirtioNetFeatures: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    private init(bit: Int) { rawValue = 1 << UInt64(bit) }

    public static let csum = Self(bit: 0)             // VIRTIO_NET_F_CSUM
    public static let guestCsum = Self(bit: 1)        // VIRTIO_NET_F_GUEST_CSUM
    public static let ctrlGuestOffloads = Self(bit: 2)
    public static let mtu = Self(bit: 3)
    public static let mac = Self(bit: 5)
    public static let guestTSO4 = Self(bit: 7)
    public static let guestTSO6 = Self(bit: 8)
    public static let guestECN = Self(bit: 9)
    public static let guestUFO = Self(bit: 10)
    public static let hostTSO4 = Self(bit: 11)
    public static let hostTSO6 = Self(bit: 12)
    public static let hostECN = Self(bit: 13)
    public static let hostUFO = Self(bit: 14)
    public static let mrgRxbuf = Self(bit: 15)        // VIRTIO_NET_F_MRG_RXBUF
    public static let status = Self(bit: 16)
    public static let ctrlVQ = Self(bit: 17)
    public static let ctrlRx = Self(bit: 18)
    public static let ctrlVlan = Self(bit: 19)
    public static let guestAnnounce = Self(bit: 21)
    public static let mq = Self(bit: 22)
    public static let ctrlMacAddr = Self(bit: 23)
    public static let version1 = Self(bit: 32)        // VIRTIO_F_VERSION_1
    public static let guestUSO4 = Self(bit: 54)
    public static let guestUSO6 = Self(bit: 55)
    public static let hostUSO = Self(bit: 56)

    /// What a receiver may be handed: the offloads a frontend accepts on its RX path.
    public static let guestOffloads: Self = [.guestCsum, .guestTSO4, .guestTSO6, .guestECN, .guestUFO, .guestUSO4, .guestUSO6]
    /// What a sender may hand over: the offloads a backend accepts on its TX path.
    public static let hostOffloads: Self = [.csum, .hostTSO4, .hostTSO6, .hostECN, .hostUFO, .hostUSO]

    /// Swaps the two directions: what one side accepts on send is what its peer
    /// may be handed on receive. USO4 and USO6 map together onto HOST_USO.
    public var mirrored: Self {
        var out: Self = []
        let pairs: [(Self, Self)] = [(.csum, .guestCsum), (.hostTSO4, .guestTSO4), (.hostTSO6, .guestTSO6),
                                     (.hostECN, .guestECN), (.hostUFO, .guestUFO)]
        for (host, guest) in pairs {
            if contains(host) { out.insert(guest) }
            if contains(guest) { out.insert(host) }
        }
        if contains(.hostUSO) { out.formUnion([.guestUSO4, .guestUSO6]) }
        if contains(.guestUSO4) && contains(.guestUSO6) { out.insert(.hostUSO) }
        return out
    }

    static let names: [(Self, String)] = [
        (.csum, "CSUM"), (.guestCsum, "GUEST_CSUM"), (.ctrlGuestOffloads, "CTRL_GUEST_OFFLOADS"), (.mtu, "MTU"),
        (.mac, "MAC"), (.guestTSO4, "GUEST_TSO4"), (.guestTSO6, "GUEST_TSO6"), (.guestECN, "GUEST_ECN"),
        (.guestUFO, "GUEST_UFO"), (.hostTSO4, "HOST_TSO4"), (.hostTSO6, "HOST_TSO6"), (.hostECN, "HOST_ECN"),
        (.hostUFO, "HOST_UFO"), (.mrgRxbuf, "MRG_RXBUF"), (.status, "STATUS"), (.ctrlVQ, "CTRL_VQ"),
        (.ctrlRx, "CTRL_RX"), (.ctrlVlan, "CTRL_VLAN"), (.guestAnnounce, "GUEST_ANNOUNCE"), (.mq, "MQ"),
        (.ctrlMacAddr, "CTRL_MAC_ADDR"), (.version1, "VERSION_1"), (.guestUSO4, "GUEST_USO4"),
        (.guestUSO6, "GUEST_USO6"), (.hostUSO, "HOST_USO"),
    ]

    /// The spec's names without the `VIRTIO_NET_F_` prefix, lowest bit first.
    public var names: [String] {
        var rest = self
        var out: [String] = []
        for (bit, name) in Self.names where contains(bit) {
            out.append(name)
            rest.remove(bit)
        }
        var raw = rest.rawValue
        while raw != 0 {
            let bit = raw.trailingZeroBitCount
            out.append("BIT\(bit)")
            raw &= raw - 1
        }
        return out
    }

    public var description: String { names.isEmpty ? "none" : names.joined(separator: ",") }
}

/// `struct virtio_net_hdr` (10 bytes) and, with `num_buffers`, the 12-byte form used
/// with MRG_RXBUF or VERSION_1. Fields are little-endian on the wire (virtio 1.x).
public struct VirtioNetHeader: Equatable, Sendable {
    /// The only header lengths a frontend may negotiate (seed: netbe_set_cap).
    public static let validLengths: Set<Int> = [0, 10, 12]
    public static let baseLength = 10
    public static let mergeableLength = 12

    public struct Flags: OptionSet, Sendable, Hashable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        public static let needsCsum = Flags(rawValue: 1)   // VIRTIO_NET_HDR_F_NEEDS_CSUM
        public static let dataValid = Flags(rawValue: 2)   // VIRTIO_NET_HDR_F_DATA_VALID
        public static let rscInfo = Flags(rawValue: 4)     // VIRTIO_NET_HDR_F_RSC_INFO
    }

    /// VIRTIO_NET_HDR_GSO_*; the ECN bit is carried separately.
    public enum GSOType: UInt8, Sendable {
        case none = 0
        case tcpv4 = 1
        case udp = 3
        case tcpv6 = 4
        case udpL4 = 5
    }
    public static let gsoECN: UInt8 = 0x80

    public var flags: Flags = []
    public var gsoType: GSOType = .none
    public var ecn = false
    public var headerLength: UInt16 = 0     // hdr_len
    public var gsoSize: UInt16 = 0
    public var csumStart: UInt16 = 0
    public var csumOffset: UInt16 = 0
    public var numBuffers: UInt16 = 0       // 12-byte form only

    public init(flags: Flags = [], gsoType: GSOType = .none, ecn: Bool = false, headerLength: UInt16 = 0,
                gsoSize: UInt16 = 0, csumStart: UInt16 = 0, csumOffset: UInt16 = 0, numBuffers: UInt16 = 0) {
        self.flags = flags
        self.gsoType = gsoType
        self.ecn = ecn
        self.headerLength = headerLength
        self.gsoSize = gsoSize
        self.csumStart = csumStart
        self.csumOffset = csumOffset
        self.numBuffers = numBuffers
    }

    /// Decodes `length` (10 or 12) bytes; nil for an unknown GSO type.
    public init?(decoding raw: UnsafeRawBufferPointer) {
        guard raw.count >= Self.baseLength else { return nil }
        func u16(_ at: Int) -> UInt16 { UInt16(raw[at]) | UInt16(raw[at + 1]) << 8 }
        flags = Flags(rawValue: raw[0])
        guard let t = GSOType(rawValue: raw[1] & ~Self.gsoECN) else { return nil }
        gsoType = t
        ecn = raw[1] & Self.gsoECN != 0
        headerLength = u16(2)
        gsoSize = u16(4)
        csumStart = u16(6)
        csumOffset = u16(8)
        numBuffers = raw.count >= Self.mergeableLength ? u16(10) : 0
    }

    /// Writes the header's first `raw.count` (10 or 12) bytes.
    public func encode(into raw: UnsafeMutableRawBufferPointer) {
        precondition(raw.count == Self.baseLength || raw.count == Self.mergeableLength, "virtio-net header is 10 or 12 bytes")
        func put(_ v: UInt16, _ at: Int) { raw[at] = UInt8(v & 0xff); raw[at + 1] = UInt8(v >> 8) }
        raw[0] = flags.rawValue
        raw[1] = gsoType.rawValue | (ecn ? Self.gsoECN : 0)
        put(headerLength, 2)
        put(gsoSize, 4)
        put(csumStart, 6)
        put(csumOffset, 8)
        if raw.count == Self.mergeableLength { put(numBuffers, 10) }
    }

    public var isGSO: Bool { gsoType != .none }
}

extension VirtioNetHeader {
    /// Byte 1 of a raw header: is this frame a GSO super-frame? Cheap check for hot paths.
    @inline(__always)
    static func rawIsGSO(_ header: UnsafeRawPointer) -> Bool {
        header.load(fromByteOffset: 1, as: UInt8.self) & ~gsoECN != 0
    }

    /// Converts a header between its 10- and 12-byte forms in place of a copy:
    /// DATA_VALID is an RX-only flag and is cleared; num_buffers becomes 1.
    /// `from` may be nil (no header: a zeroed one is written).
    @inline(__always)
    static func convert(from: UnsafeRawPointer?, fromLength: Int, to: UnsafeMutableRawPointer, toLength: Int) {
        to.initializeMemory(as: UInt8.self, repeating: 0, count: toLength)
        if let from {
            to.copyMemory(from: from, byteCount: baseLength)
            let flags = to.load(as: UInt8.self) & ~Flags.dataValid.rawValue
            to.storeBytes(of: flags, as: UInt8.self)
        }
        if toLength == mergeableLength {
            to.storeBytes(of: UInt16(1).littleEndian, toByteOffset: 10, as: UInt16.self)
        }
    }
}
