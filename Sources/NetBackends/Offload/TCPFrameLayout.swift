/// Where the headers of an Ethernet frame carrying TCP over IPv4 or IPv6 sit: what
/// software segmentation and coalescing need to find. Only the plain shapes are parsed
/// (no VLAN tag, no IPv4 fragment, no IPv6 extension header); anything else is nil and
/// is passed on as it is. Header formats: RFC 791 (IPv4), RFC 8200 (IPv6), RFC 9293 (TCP).
public struct TCPFrameLayout {
    public static let ethernetLength = 14
    public static let etherTypeIPv4: UInt16 = 0x0800
    public static let etherTypeIPv6: UInt16 = 0x86dd
    public static let protocolTCP: UInt8 = 6

    // TCP flag bits (byte 13 of the TCP header).
    public static let fin: UInt8 = 0x01
    public static let syn: UInt8 = 0x02
    public static let rst: UInt8 = 0x04
    public static let psh: UInt8 = 0x08
    public static let ack: UInt8 = 0x10
    public static let urg: UInt8 = 0x20
    public static let ece: UInt8 = 0x40
    public static let cwr: UInt8 = 0x80

    public let isIPv6: Bool
    /// Offset of the TCP header (Ethernet + IP header).
    public let tcpOffset: Int
    /// Ethernet + IP + TCP header bytes: where the payload starts.
    public let headerLength: Int
    /// Bytes of TCP payload the IP header declares (Ethernet padding excluded).
    public let payloadLength: Int

    /// Parses `length` bytes at `frame`; nil unless it is TCP in a plain IPv4/IPv6 packet
    /// whose lengths agree with the frame.
    public init?(_ frame: UnsafeRawPointer, length: Int) {
        let e = Self.ethernetLength
        guard length >= e + 20 + 20 else { return nil }
        let type = UInt16(bigEndian: frame.loadUnaligned(fromByteOffset: 12, as: UInt16.self))
        let ipLength: Int
        let ipHeader: Int
        switch type {
        case Self.etherTypeIPv4:
            let vihl = frame.load(fromByteOffset: e, as: UInt8.self)
            guard vihl >> 4 == 4 else { return nil }
            ipHeader = Int(vihl & 0x0f) * 4
            guard ipHeader >= 20 else { return nil }
            guard frame.load(fromByteOffset: e + 9, as: UInt8.self) == Self.protocolTCP else { return nil }
            // More-fragments or a fragment offset: not a whole segment.
            let fragment = UInt16(bigEndian: frame.loadUnaligned(fromByteOffset: e + 6, as: UInt16.self))
            guard fragment & 0x3fff == 0 else { return nil }
            ipLength = Int(UInt16(bigEndian: frame.loadUnaligned(fromByteOffset: e + 2, as: UInt16.self)))
            isIPv6 = false
        case Self.etherTypeIPv6:
            guard frame.load(fromByteOffset: e, as: UInt8.self) >> 4 == 6 else { return nil }
            guard frame.load(fromByteOffset: e + 6, as: UInt8.self) == Self.protocolTCP else { return nil }
            ipHeader = 40
            ipLength = 40 + Int(UInt16(bigEndian: frame.loadUnaligned(fromByteOffset: e + 4, as: UInt16.self)))
            isIPv6 = true
        default:
            return nil
        }
        tcpOffset = e + ipHeader
        guard length >= tcpOffset + 20 else { return nil }
        let tcpHeader = Int(frame.load(fromByteOffset: tcpOffset + 12, as: UInt8.self) >> 4) * 4
        guard tcpHeader >= 20 else { return nil }
        headerLength = tcpOffset + tcpHeader
        guard length >= headerLength else { return nil }
        // A GSO super-frame's IP length field may be stale (0 in some senders, or the
        // first segment's): trust the frame's length then, never more than it holds.
        let declared = e + ipLength
        guard declared >= headerLength else { return nil }
        payloadLength = min(declared, length) - headerLength
    }

    /// Length as the frame itself says (for a super-frame the IP length may not cover it).
    public init?(superFrame frame: UnsafeRawPointer, length: Int) {
        guard let l = TCPFrameLayout(frame, length: length) else { return nil }
        isIPv6 = l.isIPv6
        tcpOffset = l.tcpOffset
        headerLength = l.headerLength
        payloadLength = length - l.headerLength
    }

    public var ipOffset: Int { Self.ethernetLength }
    public var addressOffset: Int { ipOffset + (isIPv6 ? 8 : 12) }
    public var addressLength: Int { isIPv6 ? 16 : 4 }
    public var tcpHeaderLength: Int { headerLength - tcpOffset }

    public static func flags(_ frame: UnsafeRawPointer, _ layout: TCPFrameLayout) -> UInt8 {
        frame.load(fromByteOffset: layout.tcpOffset + 13, as: UInt8.self)
    }

    public static func sequence(_ frame: UnsafeRawPointer, _ layout: TCPFrameLayout) -> UInt32 {
        UInt32(bigEndian: frame.loadUnaligned(fromByteOffset: layout.tcpOffset + 4, as: UInt32.self))
    }

    /// Writes the IP length fields and, for IPv4, the header checksum, for a packet with
    /// `payload` bytes of TCP payload behind these headers.
    public func setIPLength(_ frame: UnsafeMutableRawPointer, payload: Int, ipv4ID: UInt16? = nil) {
        let l4 = tcpHeaderLength + payload
        if isIPv6 {
            frame.storeBytes(of: UInt16(truncatingIfNeeded: l4).bigEndian, toByteOffset: ipOffset + 4, as: UInt16.self)
            return
        }
        let ipHeader = tcpOffset - ipOffset
        frame.storeBytes(of: UInt16(truncatingIfNeeded: ipHeader + l4).bigEndian, toByteOffset: ipOffset + 2, as: UInt16.self)
        if let id = ipv4ID { frame.storeBytes(of: id.bigEndian, toByteOffset: ipOffset + 4, as: UInt16.self) }
        frame.storeBytes(of: UInt16(0), toByteOffset: ipOffset + 10, as: UInt16.self)
        let c = ~UInt16(truncatingIfNeeded: InternetChecksum.sum(frame + ipOffset, ipHeader))
        frame.storeBytes(of: c.bigEndian, toByteOffset: ipOffset + 10, as: UInt16.self)
    }

    /// The IPv4 header checksum (none in IPv6) and the TCP checksum both hold: summed
    /// with their checksum fields, the one's-complement sums are all ones (RFC 1071).
    /// What Linux GRO checks before it merges a segment (inet_gro_receive, tcp4/6_gro_receive).
    @inline(__always)
    public func checksumsValid(_ frame: UnsafeRawPointer) -> Bool {
        if !isIPv6 && InternetChecksum.sum(frame + ipOffset, tcpOffset - ipOffset) != 0xffff { return false }
        let tcpLength = tcpHeaderLength + payloadLength
        return InternetChecksum.sum(frame + tcpOffset, tcpLength, initial: pseudoHeaderSum(frame, tcpLength: tcpLength)) == 0xffff
    }

    /// The pseudo-header sum for a TCP segment of `tcpLength` bytes (header + payload).
    public func pseudoHeaderSum(_ frame: UnsafeRawPointer, tcpLength: Int) -> UInt32 {
        InternetChecksum.pseudoHeaderSum(addresses: frame + addressOffset, addressLength: addressLength,
                                         protocol: Self.protocolTCP, length: tcpLength)
    }
}
