#if canImport(Glibc)
import CNetBackends
import Glibc
#endif

/// The `passt` backend's options, spelled as the `slirp` backend spells them, turned into
/// passt's own command line (passt(1): `-t`/`-u` port forwards, `-4`, `-m`, `-D`, `-a`,
/// `-n`, `-g`). What passt cannot do is refused with exit 2 naming the option.
struct PasstOptions {
    /// passt's arguments for these options (without `-f`, `-F`, `-P`, which netbe adds).
    let arguments: [String]

    /// slirp options passt has no equivalent for.
    static let slirpOnly = ["dhcpstart", "restrict", "ipv6-prefix", "helper"]

    init(_ spec: BackendSpec) throws(NetBackendError) {
        let r = SpecReader(spec, repeatable: ["hostfwd"])
        func bad(_ why: String) -> NetBackendError { .badSpec("bad spec '\(spec.text)': \(why)") }
        var args: [String] = []

        for key in Self.slirpOnly {
            if let v = try r.string(key) { throw bad("\(key)=\(v): passt has no equivalent of this slirp option") }
        }
        if try !r.bool("ipv6", default: true) { args.append("-4") }
        if let mtu = try r.int("mtu", in: 68...65520) { args += ["-m", String(mtu)] }
        if let dns = try r.string("dns") {
            guard Self.isAddress(dns) else { throw bad("dns=\(dns): not an IPv4 or IPv6 address") }
            args += ["-D", dns]
        }

        // net= keeps slirp's layout inside the given network: the guest at .15 (what passt
        // hands out by DHCP), the gateway at .2 (passt maps it to the host).
        var network: (base: UInt32, mask: UInt32)?
        if let net = try r.string("net") {
            let (base, mask) = try SlirpConfiguration.parseNetwork(net, bad: bad)
            if (~UInt32(bigEndian: mask)) < 16 { throw bad("net=\(net): too small, at least a /28 is needed") }
            network = (base & mask, mask)
            args += ["-a", SlirpConfiguration.text((base & mask) | UInt32(15).bigEndian),
                     "-n", String(UInt32(bigEndian: mask).nonzeroBitCount)]
        }
        if let host = try r.string("host") {
            guard let a = SlirpConfiguration.ipv4(host) else { throw bad("host=\(host): not an IPv4 address") }
            if let n = network, a & n.mask != n.base { throw bad("host=\(host): outside net=") }
            args += ["-g", host]
        } else if let n = network {
            args += ["-g", SlirpConfiguration.text(n.base | UInt32(2).bigEndian)]
        }

        // bhyve separates rules with ';' in one value; QEMU repeats the key. Both work.
        for value in try r.strings("hostfwd") {
            for rule in value.split(separator: ";", omittingEmptySubsequences: true) {
                let f = try SlirpConfiguration.parseHostForward(String(rule), defaultGuest: 0, bad: bad)
                if f.guestAddress != 0 {
                    throw bad("hostfwd=\(rule): passt forwards to the guest's own address; leave GUESTADDR empty")
                }
                try Self.checkBindable(f, bad: bad)
                let host = f.hostAddress == 0 ? "" : SlirpConfiguration.text(f.hostAddress) + "/"
                args += [f.udp ? "-u" : "-t", "\(host)\(f.hostPort):\(f.guestPort)"]
            }
        }
        try r.finish(kind: "passt")
        arguments = args
    }

    static func isAddress(_ s: String) -> Bool {
        var a6 = in6_addr()
        return SlirpConfiguration.ipv4(s) != nil || inet_pton(AF_INET6, s, &a6) == 1
    }

    /// passt only warns when it cannot bind a forwarded port; netbe refuses the spec instead,
    /// as for `slirp` (passt runs in netbe's namespace, so the check sees the same ports).
    static func checkBindable(_ f: SlirpConfiguration.HostForward, bad: (String) -> NetBackendError) throws(NetBackendError) {
        let fd = socket(AF_INET, f.udp ? cnb_SOCK_DGRAM : cnb_SOCK_STREAM, 0)
        guard fd >= 0 else { return }
        defer { Glibc.close(fd) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = UInt16(f.hostPort).bigEndian
        sa.sin_addr.s_addr = f.hostAddress
        let rc = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            throw bad("hostfwd=\(f.text): host port \(f.hostPort) (\(f.udp ? "udp" : "tcp") on \(SlirpConfiguration.text(f.hostAddress))) cannot be bound: \(String(cString: strerror(e)))")
        }
        if !f.udp && listen(fd, 1) != 0 {
            let e = errno
            throw bad("hostfwd=\(f.text): host port \(f.hostPort) (tcp) cannot listen: \(String(cString: strerror(e)))")
        }
    }
}
