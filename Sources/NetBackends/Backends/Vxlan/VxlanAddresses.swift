#if canImport(Glibc)
import Glibc
#endif

/// What the vxlan backend asks of a socket address: same host whatever the port (a VTEP
/// picks its source port per flow), the port, multicast or not, wildcards, raw addresses.
extension ResolvedSocketAddress {
    /// Same family and IP address, whatever the port.
    func sameHost(_ other: ResolvedSocketAddress) -> Bool {
        guard family == other.family else { return false }
        return withUnsafeBytes(of: storage) { a in
            withUnsafeBytes(of: other.storage) { b in
                family == AF_INET6
                    ? memcmp(a.baseAddress! + 8, b.baseAddress! + 8, 16) == 0   // sin6_addr
                    : memcmp(a.baseAddress! + 4, b.baseAddress! + 4, 4) == 0    // sin_addr
            }
        }
    }

    var port: UInt16 {
        withUnsafeBytes(of: storage) { UInt16(bigEndian: $0.load(fromByteOffset: 2, as: UInt16.self)) }
    }

    /// This address with another port (sin_port and sin6_port are both at offset 2).
    func withPort(_ port: UInt16) -> ResolvedSocketAddress {
        var copy = self
        withUnsafeMutableBytes(of: &copy.storage) { $0.storeBytes(of: port.bigEndian, toByteOffset: 2, as: UInt16.self) }
        return copy
    }

    var isMulticast: Bool {
        withUnsafeBytes(of: storage) { b in
            family == AF_INET6 ? b[8] == 0xFF : (b[4] & 0xF0) == 0xE0
        }
    }
}

extension ResolvedSocketAddress {
    static var wildcard4: ResolvedSocketAddress {
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        return withUnsafeBytes(of: &sa) { ResolvedSocketAddress(copying: $0.baseAddress!, length: socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }

    static var wildcard6: ResolvedSocketAddress {
        var sa = sockaddr_in6()
        sa.sin6_family = sa_family_t(AF_INET6)
        return withUnsafeBytes(of: &sa) { ResolvedSocketAddress(copying: $0.baseAddress!, length: socklen_t(MemoryLayout<sockaddr_in6>.size)) }
    }

    var withUnsafeIPv4: in_addr {
        withUnsafeBytes(of: storage) { $0.load(fromByteOffset: 4, as: in_addr.self) }
    }

    var withUnsafeIPv6: in6_addr {
        withUnsafeBytes(of: storage) { $0.loadUnaligned(fromByteOffset: 8, as: in6_addr.self) }
    }
}
