import SystemPackage
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A failed system call: which call, on which device or socket, and errno, typed as
/// swift-system's `Errno` (whose description is strerror's text).
/// Its description reads `TUNSETIFF on tap0: Operation not permitted (...)`.
public struct SystemCallError: Error, CustomStringConvertible, Sendable {
    public let call: String
    public let device: String
    public let code: Errno
    /// Extra words where errno alone would not tell the user what to do.
    public let hint: String?

    /// errno as a number, for `switch` against the C constants.
    public var errno: Int32 { code.rawValue }

    public init(call: String, device: String, code: Errno, hint: String? = nil) {
        self.call = call
        self.device = device
        self.code = code
        self.hint = hint ?? SystemCallError.defaultHint(code.rawValue)
    }

    public init(call: String, device: String, errno: Int32, hint: String? = nil) {
        self.init(call: call, device: device, code: Errno(rawValue: errno), hint: hint)
    }

    public var description: String {
        let base = "\(call) on \(device): \(code.description)"
        return hint.map { "\(base) (\($0))" } ?? base
    }

    static func defaultHint(_ errno: Int32) -> String? {
        errno == EPERM ? "CAP_NET_ADMIN is needed: run as root or grant the capability" : nil
    }
}

/// Errors of the backend layer, each with the exit status `netbe` maps it to
/// (CONTRACT.md: 2 bad spec, 3 unavailable here, 1 runtime).
public enum NetBackendError: Error, CustomStringConvertible, Sendable {
    /// A spec part is wrong; the message names it.
    case badSpec(String)
    /// The kind exists but this host cannot provide it (no /dev/net/tun, no libslirp...).
    case unavailable(String)
    /// A system call failed.
    case system(SystemCallError)
    /// The device or peer went away underneath us.
    case deviceGone(String)
    /// The frontend broke the API contract (bad header length, unsupported features).
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .badSpec(let m), .unavailable(let m), .deviceGone(let m), .invalidArgument(let m): return m
        case .system(let e): return e.description
        }
    }

    public var exitStatus: Int32 {
        switch self {
        case .badSpec, .invalidArgument: return 2
        case .unavailable: return 3
        case .system, .deviceGone: return 1
        }
    }
}
