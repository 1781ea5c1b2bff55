#if canImport(Glibc)
import Glibc
#endif

extension BackendRegistry {
    /// The built-in kinds; a new backend adds itself to `BuiltinBackends.kinds`, nothing in Core.
    public static let shared = BackendRegistry(kinds: BuiltinBackends.kinds)
}

/// The kinds `BackendRegistry.shared` starts with, in bhyve's prefix order.
enum BuiltinBackends {
    static var kinds: [BackendKind] {
        [TapBackend.kind, StreamBackend.kind, DgramBackend.kind, SlirpBackend.kind, PasstBackend.kind, VxlanBackend.kind, netmap, vale]
    }

    /// Named so that bhyve specs are recognised and answered with exit 3, not "unknown".
    static let netmap = BackendKind(
        name: "netmap", prefixes: ["netmap:"],
        summary: "netmap port on a NIC (netmap:IF)",
        availability: { .unavailable(access("/dev/netmap", F_OK) == 0 ? "not implemented yet" : "no /dev/netmap (the netmap kernel module is not loaded)") },
        open: { (spec, _) throws(NetBackendError) in throw .unavailable("\(spec.name): the netmap backend is not available on this host") }
    )

    static let vale = BackendKind(
        name: "vale", prefixes: ["vale"],
        summary: "port of a VALE-style switch hosted by `netbe switch` (valeX:PORT)",
        availability: { .unavailable("not implemented yet") },
        open: { (spec, _) throws(NetBackendError) in throw .unavailable("\(spec.name): the vale backend is not implemented yet") }
    )
}
