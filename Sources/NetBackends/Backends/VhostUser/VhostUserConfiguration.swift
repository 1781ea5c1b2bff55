/// `vhost-user,socket=PATH[,server=on|off][,reconnect=SECONDS]`: serve one frontend at a
/// time on a unix socket. `server=on` (the default) listens at PATH (QEMU's
/// `-chardev socket,path=PATH`, a client that may reconnect); `server=off` connects to a
/// frontend that listens there (QEMU's `server=on`), again every `reconnect` seconds after
/// it went away (without it, netbe stops when the frontend leaves).
struct VhostUserConfiguration {
    let socketPath: String
    let server: Bool
    let reconnectSeconds: Int?

    init(_ spec: BackendSpec) throws(NetBackendError) {
        let r = SpecReader(spec)
        guard let path = try r.string("socket") else {
            throw .badSpec("bad spec '\(spec.text)': give socket=PATH (the unix socket QEMU's -chardev socket names)")
        }
        socketPath = path
        server = try r.bool("server", default: true)
        reconnectSeconds = try r.int("reconnect", in: 1...3600)
        if server && reconnectSeconds != nil {
            throw .badSpec("bad spec '\(spec.text)': reconnect= is for server=off (a listening server waits for the next frontend anyway)")
        }
        try r.finish(kind: "vhost-user")
    }
}
