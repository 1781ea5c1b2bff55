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
        [TapBackend.kind, StreamBackend.kind, DgramBackend.kind, SlirpBackend.kind, PasstBackend.kind, VxlanBackend.kind, NetmapBackend.kind, vale, NullBackend.kind, VhostUserBackend.kind]
    }

    static let vale = BackendKind(
        name: "vale", prefixes: ["vale"],
        summary: "port of a VALE-style switch hosted by `netbe switch` (valeX:PORT)",
        // With netmap's kernel module loaded, a VALE port of the kernel's switch (untested here).
        availability: { NetmapPort.deviceExists ? .untested("kernel VALE through /dev/netmap, never run against a netmap kernel") : .unavailable("not implemented yet") },
        open: { (spec, loop) throws(NetBackendError) in
            guard NetmapPort.deviceExists else { throw .unavailable("\(spec.name): the vale backend is not implemented yet") }
            return try NetmapBackend(spec: spec, eventLoop: loop)
        }
    )
}
