import CNetBackends
#if canImport(Glibc)
import Glibc
#endif

/// Opening and configuring a Linux tap through /dev/net/tun (linux/Documentation/
/// networking/tuntap.rst, netdevice(7)). Runs inside the target namespace's thread.
struct TapDevice {
    struct Options {
        var name: String
        var vnet: Bool
        var mtu: Int?
        var mac: [UInt8]?
        var up: Bool
    }

    var fd: Int32
    var name: String
    /// True when the interface existed before (persistent): we attached, not created.
    var attached: Bool
    var offloads: TapOffloads

    static func open(_ o: Options) throws(NetBackendError) -> TapDevice {
        let fd: Int32
        do {
            fd = try Syscall.open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC, device: o.name)
        } catch {
            if error.errno == ENOENT || error.errno == ENODEV {
                throw .unavailable("\(o.name): no /dev/net/tun on this host (load the tun module or create the node: mknod /dev/net/tun c 10 200)")
            }
            throw .system(error)
        }
        do {
            var features: UInt32 = 0
            try Syscall.ioctl(fd, "TUNGETFEATURES", cnb_TUNGETFEATURES, &features, device: o.name)
            if o.vnet && features & UInt32(cnb_IFF_VNET_HDR) == 0 {
                throw NetBackendError.unavailable("\(o.name): this kernel's tap has no IFF_VNET_HDR (use vnet=off)")
            }
            let attached = if_nametoindex(o.name) != 0
            var flags = cnb_IFF_TAP | cnb_IFF_NO_PI
            if o.vnet { flags |= cnb_IFF_VNET_HDR }
            var out = [CChar](repeating: 0, count: Int(cnb_IFNAMSIZ))
            do {
                try Syscall.check("TUNSETIFF", device: o.name) { cnb_tun_set_iff(fd, o.name, flags, &out) }
            } catch {
                switch error.errno {
                case EBUSY: throw NetBackendError.system(SystemCallError(call: "TUNSETIFF", device: o.name, code: error.code, hint: "another process holds this tap"))
                case EINVAL: throw NetBackendError.system(SystemCallError(call: "TUNSETIFF", device: o.name, code: error.code, hint: "an interface of that name exists and is not a tap of this kind"))
                default: throw NetBackendError.system(error)
                }
            }
            let name = String(nulTerminated: out)
            var offloads: TapOffloads = []
            if o.vnet {
                // A persistent tap keeps the last owner's settings: set both explicitly.
                var size: Int32 = Int32(VirtioNetHeader.baseLength)
                try Syscall.ioctl(fd, "TUNSETVNETHDRSZ", cnb_TUNSETVNETHDRSZ, &size, device: name)
                offloads = try TapOffloads.probe(fd: fd, device: name)
            }
            try configureLink(name: name, o)
            return TapDevice(fd: fd, name: name, attached: attached, offloads: offloads)
        } catch let e as NetBackendError {
            _ = Glibc.close(fd)
            throw e
        } catch let e as SystemCallError {
            _ = Glibc.close(fd)
            throw .system(e)
        } catch {
            _ = Glibc.close(fd)
            throw .invalidArgument("\(o.name): \(error)")
        }
    }

    /// MTU, MAC and up/down through an ioctl socket of the current namespace.
    private static func configureLink(name: String, _ o: Options) throws(NetBackendError) {
        do {
            let sock = try Syscall.check("socket", device: name) { socket(AF_INET, SocketCall.datagram | SocketCall.cloexec, 0) }
            defer { _ = Glibc.close(sock) }
            if let mtu = o.mtu { try Syscall.check("SIOCSIFMTU \(mtu)", device: name) { cnb_if_set_mtu(sock, name, Int32(mtu)) } }
            if let mac = o.mac { try Syscall.check("SIOCSIFHWADDR", device: name) { cnb_if_set_mac(sock, name, mac) } }
            try Syscall.check("SIOCSIFFLAGS", device: name) { cnb_if_set_up(sock, name, o.up ? 1 : 0) }
        } catch {
            throw .system(error)
        }
    }
}
