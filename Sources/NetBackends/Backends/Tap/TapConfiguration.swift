/// What a tap spec asks for, read and checked without opening anything (so that `netbe`
/// can refuse a bad spec before it opens the other side). Options: see `TapBackend`.
struct TapConfiguration {
    let netns: String?
    let vnet: Bool
    let offload: Bool
    let headerLength: Int
    let options: TapDevice.Options

    init(_ spec: BackendSpec) throws(NetBackendError) {
        let r = SpecReader(spec)
        netns = try r.pathComponent("netns")
        vnet = try r.bool("vnet", default: true)
        offload = try r.bool("offload", default: true)
        headerLength = try r.choice("hdrlen", ["10", "12"]).flatMap { Int($0) } ?? VirtioNetHeader.mergeableLength
        options = TapDevice.Options(name: spec.name, vnet: vnet, mtu: try r.int("mtu", in: 68...65535),
                                    mac: try r.mac("mac"), up: try r.bool("up", default: true))
        try r.finish(kind: "tap")
        try r.interfaceName(spec.name)
        if !vnet && spec.values("hdrlen").count > 0 {
            throw .badSpec("bad spec '\(spec.text)': hdrlen= needs vnet=on")
        }
    }
}
