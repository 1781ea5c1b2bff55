/// The frame a `null,generate=SIZE` backend hands out: Ethernet (02:00:00:00:00:02 from
/// 02:00:00:00:00:01), IPv4 10.0.0.1 -> 10.0.0.2 with a correct header checksum, UDP 9 -> 9
/// with no checksum (RFC 768 allows 0 over IPv4), zero payload. RFC 791 / RFC 768 layouts.
enum NullFrame {
    /// Ethernet + IPv4 + UDP headers: the smallest SIZE that is still such a frame.
    static let minimumLength = 14 + 20 + 8

    /// Writes the SIZE-byte frame into `to` (which holds at least `length` bytes).
    static func build(into to: UnsafeMutableRawPointer, length: Int) {
        precondition(length >= minimumLength && length <= maximumFrameLength, "null frame length")
        to.initializeMemory(as: UInt8.self, repeating: 0, count: length)
        let b = to.assumingMemoryBound(to: UInt8.self)
        let eth: [UInt8] = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]
        for (i, v) in eth.enumerated() { b[i] = v }
        let ipLength = min(length - 14, 65535)
        let ip: [UInt8] = [0x45, 0, UInt8(ipLength >> 8), UInt8(ipLength & 0xff), 0, 0, 0x40, 0, 64, 17, 0, 0,
                           10, 0, 0, 1, 10, 0, 0, 2]
        for (i, v) in ip.enumerated() { b[14 + i] = v }
        var sum: UInt32 = 0
        for i in stride(from: 0, to: 20, by: 2) { sum += UInt32(ip[i]) << 8 | UInt32(ip[i + 1]) }
        while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
        let check = ~UInt16(sum)
        b[24] = UInt8(check >> 8)
        b[25] = UInt8(check & 0xff)
        let udpLength = ipLength - 20
        let udp: [UInt8] = [0, 9, 0, 9, UInt8(udpLength >> 8), UInt8(udpLength & 0xff), 0, 0]
        for (i, v) in udp.enumerated() { b[34 + i] = v }
    }
}
