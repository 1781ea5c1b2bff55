#if canImport(Glibc)
import Glibc
#endif

/// `vxlan,vni=N,remote=udp:HOST:PORT[,remote=...][,local=udp:ADDR:PORT][,ageing=SECONDS][,learning=on|off][,gso=on|off][,tso=on|off][,gro=on|off][,netns=NAME]`.
/// Every address of one backend is IPv4 or every one IPv6 (one UDP socket). `local`
/// defaults to the wildcard address on port 4789; a multicast `remote=` (224.0.0.0/4,
/// ff00::/8) is joined.
struct VxlanConfiguration {
    let vni: Int
    let remotes: [ResolvedSocketAddress]
    let remoteText: [String]
    let local: ResolvedSocketAddress
    let family: Int32
    /// Seconds a learned MAC stays bound to its remote (the kernel's default is 300).
    let ageingSeconds: Int
    let learning: Bool
    /// Gather consecutive datagrams to one peer and send them with UDP_SEGMENT.
    let gso: Bool
    /// Offer checksum offload and TSO (with `gso` only): TSO frames are cut here, into
    /// the UDP GSO buffer, rather than by the relay.
    let tso: Bool
    /// Let the kernel join consecutive datagrams of a flow into one read (UDP_GRO).
    let gro: Bool
    /// The network namespace (`ip netns add`) the UDP socket lives in; nil: netbe's own.
    let netns: String?

    init(_ spec: BackendSpec) throws(NetBackendError) {
        let r = SpecReader(spec, repeatable: ["remote"])
        func bad(_ why: String) -> NetBackendError { .badSpec("bad spec '\(spec.text)': \(why)") }
        guard let vniText = try r.string("vni") else { throw bad("give vni=N (0 to \(VxlanHeader.maximumVNI))") }
        guard let v = Int(vniText), (0...VxlanHeader.maximumVNI).contains(v) else {
            throw bad("vni=\(vniText): expected a whole number from 0 to \(VxlanHeader.maximumVNI) (24 bits)")
        }
        vni = v
        let remoteValues = try r.strings("remote")
        guard !remoteValues.isEmpty else { throw bad("give at least one remote=udp:HOST:PORT") }
        var resolved: [ResolvedSocketAddress] = []
        for text in remoteValues {
            guard case .udp = try NetSocketAddress(parsing: text) else { throw bad("remote=\(text): expected udp:HOST:PORT") }
            let a = try NetSocketAddress(parsing: text).resolve()
            if let f = resolved.first, f.family != a.family { throw bad("remote=\(text): mixes IPv4 and IPv6 outer addresses") }
            resolved.append(a)
        }
        remotes = resolved
        remoteText = remoteValues
        family = resolved[0].family
        let localText = try r.string("local") ?? (family == AF_INET6 ? "udp:[::]:\(VxlanHeader.defaultPort)" : "udp:0.0.0.0:\(VxlanHeader.defaultPort)")
        guard case .udp = try NetSocketAddress(parsing: localText) else { throw bad("local=\(localText): expected udp:ADDR:PORT") }
        local = try NetSocketAddress(parsing: localText).resolve()
        if local.family != family { throw bad("local=\(localText): the remotes are IPv\(family == AF_INET6 ? 6 : 4)") }
        ageingSeconds = try r.int("ageing", in: 1...86400) ?? 300
        learning = try r.bool("learning", default: true)
        gso = try r.bool("gso", default: true)
        tso = try r.bool("tso", default: true)
        gro = try r.bool("gro", default: true)
        netns = try r.string("netns")
        try r.finish(kind: "vxlan")
    }
}
