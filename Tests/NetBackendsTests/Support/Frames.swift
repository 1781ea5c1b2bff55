/// The few frames the kernel tests exchange with a tap, built and read byte by byte:
/// Ethernet II, ARP (RFC 826), IPv4 (RFC 791), ICMP echo (RFC 792), TCP (RFC 9293),
/// with the Internet checksum of RFC 1071. Multi-byte fields are big-endian.
enum Frames {
    static let broadcast: [UInt8] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
    static let typeIPv4: UInt16 = 0x0800
    static let typeARP: UInt16 = 0x0806
    static let protoICMP: UInt8 = 1
    static let protoTCP: UInt8 = 6

    /// RFC 1071: one's-complement sum of 16-bit words, folded and complemented.
    /// Over data that includes a correct checksum field the result is 0.
    static func checksum(_ bytes: ArraySlice<UInt8>, initial: UInt32 = 0) -> UInt16 {
        var sum = initial
        var i = bytes.startIndex
        while i + 1 < bytes.endIndex {
            sum &+= UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1])
            i += 2
        }
        if i < bytes.endIndex { sum &+= UInt32(bytes[i]) << 8 }
        while sum >> 16 != 0 { sum = (sum & 0xffff) &+ (sum >> 16) }
        return ~UInt16(sum)
    }

    /// The IPv4 pseudo-header sum TCP and UDP checksums start from.
    static func pseudoHeaderSum(src: [UInt8], dst: [UInt8], proto: UInt8, length: Int) -> UInt32 {
        var p: [UInt8] = src + dst + [0, proto]
        p.put16(UInt16(length))
        return UInt32(~checksum(p[...]))
    }

    static func ethernet(dst: [UInt8], src: [UInt8], type: UInt16, _ payload: [UInt8]) -> [UInt8] {
        var f = dst + src
        f.put16(type)
        return f + payload
    }

    /// An ARP request "who has `targetIP`? tell `senderIP`" from `senderMAC`.
    static func arpRequest(senderMAC: [UInt8], senderIP: [UInt8], targetIP: [UInt8]) -> [UInt8] {
        var a: [UInt8] = []
        a.put16(1)            // hardware: Ethernet
        a.put16(typeIPv4)     // protocol: IPv4
        a += [6, 4]
        a.put16(1)            // request
        a += senderMAC + senderIP + [0, 0, 0, 0, 0, 0] + targetIP
        return ethernet(dst: broadcast, src: senderMAC, type: typeARP, a)
    }

    /// An IPv4 header without options (checksum filled in) followed by `payload`.
    static func ipv4(src: [UInt8], dst: [UInt8], proto: UInt8, id: UInt16, _ payload: [UInt8]) -> [UInt8] {
        var h: [UInt8] = [0x45, 0]
        h.put16(UInt16(20 + payload.count))
        h.put16(id)
        h.put16(0x4000)       // don't fragment
        h += [64, proto, 0, 0]
        h += src + dst
        h.set16(checksum(h[...]), at: 10)
        return h + payload
    }

    static func icmpEchoRequest(id: UInt16, sequence: UInt16, _ data: [UInt8]) -> [UInt8] {
        var m: [UInt8] = [8, 0, 0, 0]
        m.put16(id)
        m.put16(sequence)
        m += data
        m.set16(checksum(m[...]), at: 2)
        return m
    }

    static let tcpFIN: UInt8 = 0x01, tcpSYNFlag: UInt8 = 0x02, tcpRST: UInt8 = 0x04
    static let tcpPSH: UInt8 = 0x08, tcpACK: UInt8 = 0x10

    /// A TCP segment. `options` must be a multiple of 4 bytes. With `partialChecksum` the
    /// checksum field holds only the folded pseudo-header sum, as a sender leaves it for
    /// NEEDS_CSUM (virtio 1.2, 5.1.6.2); otherwise it is complete.
    static func tcp(src: [UInt8], dst: [UInt8], sourcePort: UInt16, destinationPort: UInt16, sequence: UInt32,
                    acknowledgment: UInt32 = 0, flags: UInt8, window: UInt16 = 65535, options: [UInt8] = [],
                    payload: [UInt8] = [], partialChecksum: Bool = false) -> [UInt8] {
        precondition(options.count % 4 == 0)
        var t: [UInt8] = []
        t.put16(sourcePort)
        t.put16(destinationPort)
        t.put32(sequence)
        t.put32(acknowledgment)
        t += [UInt8((5 + options.count / 4) << 4), flags]
        t.put16(window)
        t += [0, 0, 0, 0]     // checksum, urgent pointer
        t += options + payload
        let sum = pseudoHeaderSum(src: src, dst: dst, proto: protoTCP, length: t.count)
        // The pseudo-header sum is already folded to 16 bits.
        t.set16(partialChecksum ? UInt16(truncatingIfNeeded: sum) : checksum(t[...], initial: sum), at: 16)
        return t
    }

    /// A bare SYN (no options) with a complete checksum.
    static func tcpSYN(src: [UInt8], dst: [UInt8], sourcePort: UInt16, destinationPort: UInt16, sequence: UInt32) -> [UInt8] {
        tcp(src: src, dst: dst, sourcePort: sourcePort, destinationPort: destinationPort, sequence: sequence, flags: tcpSYNFlag)
    }

    /// A frame read back: the fields the tests check.
    struct Parsed {
        let bytes: [UInt8]
        var destinationMAC: [UInt8] { Array(bytes[0..<6]) }
        var sourceMAC: [UInt8] { Array(bytes[6..<12]) }
        var etherType: UInt16 { bytes.count >= 14 ? bytes.be16(12) : 0 }

        // ARP, at offset 14.
        var arpOperation: UInt16 { bytes.be16(20) }
        var arpSenderMAC: [UInt8] { Array(bytes[22..<28]) }
        var arpSenderIP: [UInt8] { Array(bytes[28..<32]) }
        var arpTargetMAC: [UInt8] { Array(bytes[32..<38]) }
        var arpTargetIP: [UInt8] { Array(bytes[38..<42]) }
        var isARPReply: Bool { etherType == typeARP && bytes.count >= 42 && arpOperation == 2 }

        // IPv4, at offset 14.
        var isIPv4: Bool { etherType == typeIPv4 && bytes.count >= 34 && bytes[14] >> 4 == 4 }
        var ipHeaderLength: Int { Int(bytes[14] & 0x0f) * 4 }
        var ipTotalLength: Int { Int(bytes.be16(16)) }
        var ipProtocol: UInt8 { bytes[23] }
        var ipSource: [UInt8] { Array(bytes[26..<30]) }
        var ipDestination: [UInt8] { Array(bytes[30..<34]) }
        var ipHeaderChecksumValid: Bool { checksum(bytes[14..<(14 + ipHeaderLength)]) == 0 }
        /// The IPv4 payload, cut at the total length (a frame may carry Ethernet padding).
        var l4: ArraySlice<UInt8> { bytes[(14 + ipHeaderLength)..<(14 + ipTotalLength)] }

        // ICMP
        var icmpType: UInt8 { l4[l4.startIndex] }
        var icmpID: UInt16 { l4.be16(4) }
        var icmpSequence: UInt16 { l4.be16(6) }
        var icmpData: [UInt8] { Array(l4.dropFirst(8)) }
        var icmpChecksumValid: Bool { checksum(l4) == 0 }

        // TCP
        var tcpSourcePort: UInt16 { l4.be16(0) }
        var tcpDestinationPort: UInt16 { l4.be16(2) }
        var tcpSequence: UInt32 { l4.be32(4) }
        var tcpAcknowledgment: UInt32 { l4.be32(8) }
        var tcpFlags: UInt8 { l4[l4.startIndex + 13] }
        var tcpHeaderLength: Int { Int(l4[l4.startIndex + 12] >> 4) * 4 }
        var tcpPayload: ArraySlice<UInt8> { l4.dropFirst(tcpHeaderLength) }
        var tcpChecksumValid: Bool {
            checksum(l4, initial: pseudoHeaderSum(src: ipSource, dst: ipDestination, proto: protoTCP, length: l4.count)) == 0
        }
    }
}

extension Array where Element == UInt8 {
    mutating func put16(_ v: UInt16) { append(UInt8(v >> 8)); append(UInt8(v & 0xff)) }
    mutating func put32(_ v: UInt32) { put16(UInt16(v >> 16)); put16(UInt16(v & 0xffff)) }
    mutating func set16(_ v: UInt16, at i: Int) { self[i] = UInt8(v >> 8); self[i + 1] = UInt8(v & 0xff) }
}

extension Collection where Element == UInt8, Index == Int {
    /// Big-endian 16/32-bit reads at `offset` from the collection's start.
    func be16(_ offset: Int) -> UInt16 {
        let i = startIndex + offset
        return UInt16(self[i]) << 8 | UInt16(self[i + 1])
    }
    func be32(_ offset: Int) -> UInt32 { UInt32(be16(offset)) << 16 | UInt32(be16(offset + 2)) }
}

/// "aa:bb:cc:dd:ee:ff" -> bytes, for MACs read from `ip link`.
func parseMAC(_ text: String) -> [UInt8]? {
    let parts = text.split(separator: ":")
    let bytes = parts.compactMap { UInt8($0, radix: 16) }
    return parts.count == 6 && bytes.count == 6 ? bytes : nil
}
