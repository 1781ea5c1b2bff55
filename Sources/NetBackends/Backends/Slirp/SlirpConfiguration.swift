#if canImport(Glibc)
import Glibc
#endif

/// The `slirp` backend's options, spelled as QEMU's `-netdev user` and bhyve's slirp
/// backend spell them (qemu-options.hx; bhyve(8) slirp section). Addresses are kept in
/// network byte order, as `in_addr.s_addr` holds them.
public struct SlirpConfiguration: Sendable {
    public var network: UInt32
    public var netmask: UInt32
    public var gateway: UInt32
    public var dhcpStart: UInt32
    public var dns: UInt32
    public var ipv6: Bool
    /// 16 bytes of the IPv6 prefix; the gateway is PREFIX::2 and DNS PREFIX::3 (as QEMU).
    public var ipv6Prefix: [UInt8]
    public var ipv6PrefixLength: Int
    public var hostForwards: [HostForward]
    public var restricted: Bool
    public var mtu: Int
    /// Run libslirp in a privilege-separated helper process (the default).
    public var helper: Bool

    /// One `hostfwd=` rule: a listening socket on the host joined to a guest port.
    public struct HostForward: Sendable, Equatable {
        public var udp: Bool
        public var hostAddress: UInt32
        public var hostPort: Int
        public var guestAddress: UInt32
        public var guestPort: Int
        /// The rule as written, for error messages.
        public var text: String
    }

    /// The Ethernet frame size the stack produces at most (MTU + header + VLAN tag).
    public var maximumFrame: Int { mtu + 18 }

    /// Reads and checks every option; throws `.badSpec` naming the bad part.
    /// Leaves `reader.finish` to the caller.
    public init(_ r: SpecReader) throws(NetBackendError) {
        let text = r.spec.text
        func bad(_ why: String) -> NetBackendError { .badSpec("bad spec '\(text)': \(why)") }

        let net = try r.string("net") ?? "10.0.2.0/24"
        let (base, mask) = try Self.parseNetwork(net, bad: bad)
        let net0 = base & mask
        network = net0
        netmask = mask
        func inNet(_ key: String, default offset: UInt32) throws(NetBackendError) -> UInt32 {
            guard let v = try r.string(key) else { return net0 | offset.bigEndian }
            guard let a = Self.ipv4(v) else { throw bad("\(key)=\(v): not an IPv4 address") }
            guard a & mask == net0 else { throw bad("\(key)=\(v): outside net=\(net)") }
            let host = a & ~mask
            guard host != 0 && host != ~mask else { throw bad("\(key)=\(v): is the network or broadcast address of net=\(net)") }
            return a
        }
        if (~UInt32(bigEndian: mask)) < 16 { throw bad("net=\(net): too small, at least a /28 is needed") }
        gateway = try inNet("host", default: 2)
        dhcpStart = try inNet("dhcpstart", default: 15)
        dns = try inNet("dns", default: 3)
        if gateway == dhcpStart || dns == dhcpStart { throw bad("dhcpstart=: must differ from the gateway and the DNS address") }

        ipv6 = try r.bool("ipv6", default: true)
        let prefixText = try r.string("ipv6-prefix") ?? "fec0::/64"
        (ipv6Prefix, ipv6PrefixLength) = try Self.parseIPv6Prefix(prefixText, bad: bad)

        restricted = try r.bool("restrict", default: false)
        mtu = try r.int("mtu", in: 576...65521) ?? 1500
        helper = try r.bool("helper", default: true)

        var forwards: [HostForward] = []
        // bhyve separates rules with ';' in one value; QEMU repeats the key. Both work.
        for value in try r.strings("hostfwd") {
            for rule in value.split(separator: ";", omittingEmptySubsequences: true) {
                forwards.append(try Self.parseHostForward(String(rule), defaultGuest: dhcpStart, bad: bad))
            }
        }
        hostForwards = forwards
    }

    // MARK: parsing

    static func ipv4(_ s: String) -> UInt32? {
        var a = in_addr()
        return inet_pton(AF_INET, s, &a) == 1 ? a.s_addr : nil
    }

    static func text(_ address: UInt32) -> String {
        var a = in_addr(s_addr: address)
        var buf = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        inet_ntop(AF_INET, &a, &buf, socklen_t(buf.count))
        return String(nulTerminated: buf)
    }

    /// `A.B.C.D/LEN` or `A.B.C.D/MASK`; no suffix means /24 (QEMU's default).
    static func parseNetwork(_ s: String, bad: (String) -> NetBackendError) throws(NetBackendError) -> (UInt32, UInt32) {
        let parts = s.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let base = ipv4(String(parts[0])) else {
            throw bad("net=\(s): expected an IPv4 network like 10.0.2.0/24")
        }
        var mask = UInt32(0xffff_ff00).bigEndian
        if parts.count == 2 {
            if let len = Int(parts[1]), (1...30).contains(len) {
                mask = (UInt32.max << (32 - len)).bigEndian
            } else if let m = ipv4(String(parts[1])), (~UInt32(bigEndian: m) &+ 1).nonzeroBitCount == 1 {
                mask = m
            } else {
                throw bad("net=\(s): the prefix length must be 1 to 30 or a contiguous netmask")
            }
        }
        return (base, mask)
    }

    /// `PREFIX[/LEN]`, LEN 1..126 (libslirp needs room for ::2 and ::3), default 64.
    static func parseIPv6Prefix(_ s: String, bad: (String) -> NetBackendError) throws(NetBackendError) -> ([UInt8], Int) {
        let parts = s.split(separator: "/", omittingEmptySubsequences: false)
        var a = in6_addr()
        guard parts.count <= 2, inet_pton(AF_INET6, String(parts[0]), &a) == 1 else {
            throw bad("ipv6-prefix=\(s): expected an IPv6 prefix like fec0::/64")
        }
        var length = 64
        if parts.count == 2 {
            guard let l = Int(parts[1]), (1...126).contains(l) else { throw bad("ipv6-prefix=\(s): the length must be 1 to 126") }
            length = l
        }
        let bytes = withUnsafeBytes(of: &a) { Array($0) }
        return (bytes, length)
    }

    /// `[tcp|udp:][HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT`; an empty host address is
    /// every address (as QEMU), an empty guest address is the first DHCP address.
    static func parseHostForward(_ rule: String, defaultGuest: UInt32, bad: (String) -> NetBackendError) throws(NetBackendError) -> HostForward {
        func fail(_ why: String) -> NetBackendError { bad("hostfwd=\(rule): \(why)") }
        var rest = Substring(rule)
        var udp = false
        if rest.hasPrefix("tcp:") { rest = rest.dropFirst(4) } else if rest.hasPrefix("udp:") { udp = true; rest = rest.dropFirst(4) }
        let sides = rest.split(separator: "-", omittingEmptySubsequences: false)
        guard sides.count == 2 else { throw fail("expected tcp|udp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT") }
        func endpoint(_ s: Substring, _ which: String, defaultAddress: UInt32) throws(NetBackendError) -> (UInt32, Int) {
            guard let colon = s.lastIndex(of: ":") else { throw fail("the \(which) side '\(s)' needs ADDR:PORT (the address may be empty)") }
            let addrText = String(s[..<colon]), portText = String(s[s.index(after: colon)...])
            guard let port = Int(portText), (1...65535).contains(port) else { throw fail("\(which) port '\(portText)' is not 1 to 65535") }
            if addrText.isEmpty { return (defaultAddress, port) }
            guard let a = ipv4(addrText) else { throw fail("\(which) address '\(addrText)' is not an IPv4 address") }
            return (a, port)
        }
        let (ha, hp) = try endpoint(sides[0], "host", defaultAddress: 0)
        let (ga, gp) = try endpoint(sides[1], "guest", defaultAddress: defaultGuest)
        return HostForward(udp: udp, hostAddress: ha, hostPort: hp, guestAddress: ga, guestPort: gp, text: rule)
    }
}
