/// The VXLAN header (RFC 7348, section 5): 8 bytes before the inner Ethernet frame.
/// Byte 0 holds the flags, of which only I (0x08, "VNI valid") must be set; bytes 1-3 are
/// reserved; bytes 4-6 the 24-bit VNI; byte 7 reserved. Receivers ignore the reserved
/// bits and other flags (RFC 7348: "reserved fields ... MUST be ignored on receipt").
enum VxlanHeader {
    static let length = 8
    static let flagI: UInt8 = 0x08
    static let defaultPort: UInt16 = 4789
    static let maximumVNI = 0xFF_FFFF
    /// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14): what the underlay
    /// MTU must leave room for (RFC 7348 section 4.3; Linux vxlan uses the same 50).
    static let overheadIPv4 = 50
    /// With an IPv6 outer header (40 instead of 20).
    static let overheadIPv6 = 70

    /// Writes the header for `vni` at `p` (8 bytes).
    static func write(vni: Int, to p: UnsafeMutablePointer<UInt8>) {
        p[0] = flagI
        p[1] = 0; p[2] = 0; p[3] = 0
        p[4] = UInt8(truncatingIfNeeded: vni >> 16)
        p[5] = UInt8(truncatingIfNeeded: vni >> 8)
        p[6] = UInt8(truncatingIfNeeded: vni)
        p[7] = 0
    }

    enum Check {
        case ours
        case badHeader
        case otherVNI
    }

    /// Whether the header at `p` carries a valid VNI and that VNI is `vni`.
    static func check(_ p: UnsafePointer<UInt8>, vni: Int) -> Check {
        guard p[0] & flagI != 0 else { return .badHeader }
        let v = Int(p[4]) << 16 | Int(p[5]) << 8 | Int(p[6])
        return v == vni ? .ours : .otherVNI
    }
}
