#if canImport(Glibc)
import Glibc
#endif

extension SlirpHelper {
    /// The entry point for a program that embeds NetBackends and opens `slirp` backends
    /// with `helper=on` (the default): the backend re-executes this program
    /// (`SlirpHelperBackend.executable`, by default the running binary) as
    /// `PROGRAM slirp-helper --fd N --parent PID SPEC`. Call this first thing in `main`:
    ///
    /// ```swift
    /// if let status = SlirpHelper.runIfRequested() { exit(status) }
    /// ```
    ///
    /// It returns nil when the arguments are not a helper invocation (the program goes on
    /// as usual), else runs the helper until its parent goes away and returns its exit
    /// status. `netbe` itself reaches `run(socket:parent:spec:)` through its hidden
    /// subcommand instead.
    public static func runIfRequested(arguments: [String] = CommandLine.arguments) -> Int32? {
        guard let invocation = Invocation(arguments) else { return nil }
        return run(socket: invocation.fd, parent: invocation.parent, spec: invocation.spec)
    }

    /// The argument vector the backend builds for its helper, and its parsing back (for a
    /// program with its own argument parser that must let this call through).
    public struct Invocation: Equatable, Sendable {
        public var fd: Int32
        public var parent: pid_t
        public var spec: String

        public func arguments(program: String) -> [String] {
            [program, SlirpHelper.subcommand, "--fd", String(fd), "--parent", String(parent), spec]
        }

        /// Nil unless `arguments` is exactly what `arguments(program:)` produces.
        public init?(_ arguments: [String]) {
            guard arguments.count == 7, arguments[1] == SlirpHelper.subcommand,
                  arguments[2] == "--fd", let fd = Int32(arguments[3]), fd >= 0,
                  arguments[4] == "--parent", let parent = pid_t(arguments[5]), parent > 0
            else { return nil }
            self.init(fd: fd, parent: parent, spec: arguments[6])
        }

        public init(fd: Int32, parent: pid_t, spec: String) {
            self.fd = fd
            self.parent = parent
            self.spec = spec
        }
    }
}
