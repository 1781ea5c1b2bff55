/// Whether a kind can be used on this host (`netbe backends`).
public enum Availability: Sendable, Equatable, CustomStringConvertible {
    case available
    case unavailable(String)
    case untested(String)

    public var description: String {
        switch self {
        case .available: return "available"
        case .unavailable(let why): return "unavailable: \(why)"
        case .untested(let why): return "untested here: \(why)"
        }
    }
}

/// One kind of backend: its name, the spec prefixes that select it (as bhyve's
/// net_backend_set), and how to open one.
public struct BackendKind: Sendable {
    public typealias Opener = @Sendable (_ spec: BackendSpec, _ loop: NetEventLoop) throws(NetBackendError) -> NetBackend
    /// Reads a spec's options as `open` would and throws `.badSpec` for a bad one,
    /// without opening anything.
    public typealias Checker = @Sendable (_ spec: BackendSpec) throws(NetBackendError) -> Void

    public let name: String
    public let prefixes: [String]
    public let summary: String
    public let availability: @Sendable () -> Availability
    public let open: Opener
    public let check: Checker?

    public init(name: String, prefixes: [String], summary: String,
                availability: @escaping @Sendable () -> Availability = { .available },
                check: Checker? = nil,
                open: @escaping Opener) {
        self.name = name
        self.prefixes = prefixes
        self.summary = summary
        self.availability = availability
        self.check = check
        self.open = open
    }
}

/// The kinds a spec can name. `shared` (declared beside the backends, so that Core names
/// none of them) holds the built-in ones; a library user may `register` a kind of their
/// own, which then also answers to `type=`.
public final class BackendRegistry: @unchecked Sendable {
    private let lock = ConditionLock()
    private var registered: [BackendKind]

    public init(kinds: [BackendKind] = []) {
        registered = kinds
    }

    public var kinds: [BackendKind] { lock.withLock { registered } }

    /// Adds a kind; a kind of the same name is replaced.
    public func register(_ kind: BackendKind) {
        lock.withLock {
            registered.removeAll { $0.name == kind.name }
            registered.append(kind)
        }
    }

    /// The kind a spec names: `type=` wins, else the longest matching name prefix.
    public func kind(for spec: BackendSpec) throws(NetBackendError) -> BackendKind {
        let all = kinds
        let types = spec.values("type")
        if types.count > 1 { throw .badSpec("bad spec '\(spec.text)': 'type' is given \(types.count) times") }
        if let type = types.first {
            guard let k = all.first(where: { $0.name == type }) else {
                throw .badSpec("bad spec '\(spec.text)': type=\(type) is not a backend kind (known: \(all.map(\.name).joined(separator: ", ")))")
            }
            return k
        }
        var best: (kind: BackendKind, length: Int)?
        for k in all {
            for p in k.prefixes where spec.name.hasPrefix(p) && p.count > (best?.length ?? -1) {
                best = (k, p.count)
            }
        }
        guard let found = best?.kind else {
            let prefixes = all.flatMap(\.prefixes).joined(separator: ", ")
            throw .badSpec("bad spec '\(spec.text)': no backend kind matches '\(spec.name)' (prefixes: \(prefixes); or give type=)")
        }
        return found
    }

    /// Checks `text` as far as can be done without opening anything: grammar, kind, and
    /// the kind's options. `netbe` checks every spec before it opens the first.
    public func check(_ text: String) throws(NetBackendError) {
        let spec = try BackendSpec(parsing: text)
        try kind(for: spec).check?(spec)
    }

    /// Parses `text` and opens the backend it names on `loop`.
    public func open(_ text: String, on loop: NetEventLoop) throws(NetBackendError) -> NetBackend {
        let spec = try BackendSpec(parsing: text)
        let kind = try kind(for: spec)
        if case .unavailable(let why) = kind.availability() {
            throw .unavailable("\(spec.name): the \(kind.name) backend is unavailable here: \(why)")
        }
        return try kind.open(spec, loop)
    }
}
