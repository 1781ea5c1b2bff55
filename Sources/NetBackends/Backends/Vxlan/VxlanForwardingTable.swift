#if canImport(Glibc)
import Glibc
#endif

/// Flood and learn, as the kernel's vxlan device: an inner source MAC seen in a frame
/// from a remote binds that MAC to the remote for `ageing` seconds; a frame to a bound
/// MAC goes to that remote only, anything else (broadcast, multicast, unknown or expired
/// unicast) to every configured remote (head-end replication, RFC 7348 section 4.2).
/// Peers are kept by index; the table is preallocated so that learning an address
/// already known allocates nothing.
struct VxlanForwardingTable {
    struct Entry {
        var peer: Int
        var seen: Double
    }

    /// Every outer address frames may go to: the configured remotes first, then
    /// learned senders that are none of them (e.g. members behind a multicast group).
    private(set) var peers: [ResolvedSocketAddress]
    let configured: Int
    private var macs: [UInt64: Entry] = [:]
    let ageing: Double
    /// Bounds the table against a flood of invented source MACs.
    static let capacity = 4096

    init(remotes: [ResolvedSocketAddress], ageingSeconds: Int) {
        peers = remotes
        configured = remotes.count
        ageing = Double(ageingSeconds)
        macs.reserveCapacity(Self.capacity)
        peers.reserveCapacity(remotes.count + 64)
    }

    static func mac(_ p: UnsafePointer<UInt8>) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<6 { v = v << 8 | UInt64(p[i]) }
        return v
    }

    static func isGroup(_ mac: UInt64) -> Bool { (mac >> 40) & 1 != 0 }

    /// The peer a frame to `mac` goes to, or nil to flood.
    func lookup(_ mac: UInt64, now: Double) -> Int? {
        guard !Self.isGroup(mac), let e = macs[mac], now - e.seen < ageing else { return nil }
        return e.peer
    }

    /// Binds `mac` to the sender of a frame. The sender's port is not kept (the kernel
    /// picks the outer source port per flow): a configured remote with the same address
    /// is used, else the address with `port`, the port VXLAN is sent to.
    mutating func learn(_ mac: UInt64, from sender: ResolvedSocketAddress, port: UInt16, now: Double) {
        guard !Self.isGroup(mac), mac != 0 else { return }
        var peer = -1
        for i in peers.indices where peers[i].sameHost(sender) { peer = i; break }
        if peer < 0 {
            guard peers.count < configured + 64 else { return }
            peers.append(sender.withPort(port))
            peer = peers.count - 1
        }
        if var e = macs[mac] {
            e.peer = peer
            e.seen = now
            macs[mac] = e
        } else if macs.count < Self.capacity {
            macs[mac] = Entry(peer: peer, seen: now)
        } else {
            macs = macs.filter { now - $0.value.seen < ageing }
        }
    }

    static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC_COARSE, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }
}
