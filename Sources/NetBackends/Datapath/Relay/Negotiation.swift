/// What each side of a relay may accept, following the rule that a side may be handed
/// only what its peer accepts on send: A's GUEST_* are B's HOST_* (and CSUM), and back.
public enum Negotiation {
    static let offloads = VirtioNetFeatures.guestOffloads.union(.hostOffloads)

    /// What a relay can do in software between a side and any peer: finish checksums and
    /// cut TCP GSO frames the side hands out (`TCPSegmenter`), and join the peer's TCP
    /// segments into GSO frames for the side (`TCPCoalescer`). UDP GSO is never granted.
    public static let inSoftware: VirtioNetFeatures = [.guestCsum, .guestTSO4, .guestTSO6, .csum, .hostTSO4, .hostTSO6]

    /// Features to pass to `side.setCapabilities` when joined to `peer`. With `software`,
    /// the side also gets what the relay can do for it itself (see `inSoftware`).
    public static func features(for side: VirtioNetFeatures, peer: VirtioNetFeatures, software: Bool = false) -> VirtioNetFeatures {
        let peerTakes = software ? peer.mirrored.union(inSoftware) : peer.mirrored
        return side.intersection(offloads).intersection(peerTakes).withPrerequisites
    }
}

extension VirtioNetFeatures {
    /// Drops bits whose prerequisites are absent (virtio 1.2, 5.1.3.1): TSO, UFO and USO
    /// need their side's checksum offload; ECN needs a TSO.
    public var withPrerequisites: VirtioNetFeatures {
        var f = self
        if !f.contains(.guestCsum) { f.subtract([.guestTSO4, .guestTSO6, .guestUFO, .guestUSO4, .guestUSO6]) }
        if !f.contains(.csum) { f.subtract([.hostTSO4, .hostTSO6, .hostUFO, .hostUSO]) }
        if f.isDisjoint(with: [.guestTSO4, .guestTSO6]) { f.remove(.guestECN) }
        if f.isDisjoint(with: [.hostTSO4, .hostTSO6]) { f.remove(.hostECN) }
        return f
    }
}
