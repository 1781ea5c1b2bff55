import CNetBackends

/// Mapping between virtio-net GUEST_* features and the tap's TUN_F_* offload flags.
/// TUN_F_* tell the kernel what the reader of the tap fd accepts (linux/if_tun.h), so
/// they follow the features the frontend accepted for its receive path.
struct TapOffloads: OptionSet, Sendable {
    let rawValue: UInt32

    static let csum = TapOffloads(rawValue: cnb_TUN_F_CSUM)
    static let tso4 = TapOffloads(rawValue: cnb_TUN_F_TSO4)
    static let tso6 = TapOffloads(rawValue: cnb_TUN_F_TSO6)
    static let tsoECN = TapOffloads(rawValue: cnb_TUN_F_TSO_ECN)
    static let ufo = TapOffloads(rawValue: cnb_TUN_F_UFO)
    static let uso = TapOffloads(rawValue: cnb_TUN_F_USO4 | cnb_TUN_F_USO6)

    /// TUN_F_* for accepted features: TSO needs CSUM, ECN needs a TSO, USO4 and USO6 go together.
    init(accepting f: VirtioNetFeatures) {
        var o: TapOffloads = []
        if f.contains(.guestCsum) {
            o.insert(.csum)
            if f.contains(.guestTSO4) { o.insert(.tso4) }
            if f.contains(.guestTSO6) { o.insert(.tso6) }
            if f.contains(.guestECN) && !o.isDisjoint(with: [.tso4, .tso6]) { o.insert(.tsoECN) }
            if f.contains(.guestUFO) { o.insert(.ufo) }
            if f.contains(.guestUSO4) && f.contains(.guestUSO6) { o.insert(.uso) }
        }
        self = o
    }

    init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Features a tap with these offloads supports: its receive offloads, the matching
    /// transmit offloads (a vnet-header tap takes GSO on write), and MRG_RXBUF.
    var features: VirtioNetFeatures {
        var f: VirtioNetFeatures = [.mrgRxbuf]
        if contains(.csum) { f.formUnion([.csum, .guestCsum]) }
        if contains(.tso4) { f.formUnion([.guestTSO4, .hostTSO4]) }
        if contains(.tso6) { f.formUnion([.guestTSO6, .hostTSO6]) }
        if contains(.tsoECN) { f.formUnion([.guestECN, .hostECN]) }
        if contains(.ufo) { f.formUnion([.guestUFO, .hostUFO]) }
        if contains(.uso) { f.formUnion([.guestUSO4, .guestUSO6, .hostUSO]) }
        return f
    }

    /// Finds what this kernel's tap supports by trying each group (EINVAL = unsupported);
    /// TUNGETFEATURES only lists IFF_* flags, not offloads. Leaves offloads off.
    static func probe(fd: Int32, device: String) throws(SystemCallError) -> TapOffloads {
        var found: TapOffloads = []
        for group: TapOffloads in [.csum, [.csum, .tso4, .tso6], [.csum, .tso4, .tso6, .tsoECN], [.csum, .ufo], [.csum, .uso]] {
            do {
                try Syscall.ioctl(fd, "TUNSETOFFLOAD", cnb_TUNSETOFFLOAD, value: UInt(group.rawValue), device: device)
                found.formUnion(group)
            } catch {
                if error.errno != EINVAL { throw error }
            }
        }
        try Syscall.ioctl(fd, "TUNSETOFFLOAD", cnb_TUNSETOFFLOAD, value: 0, device: device)
        return found
    }
}

#if canImport(Glibc)
import Glibc
#endif
