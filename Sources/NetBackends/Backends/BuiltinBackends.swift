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
        [TapBackend.kind, StreamBackend.kind, DgramBackend.kind, SlirpBackend.kind, PasstBackend.kind, VxlanBackend.kind, NetmapBackend.kind, ValeBackend.kind, NullBackend.kind, VhostUserBackend.kind]
    }
}
