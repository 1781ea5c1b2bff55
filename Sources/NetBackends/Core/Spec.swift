/// A backend spec as written on a command line: `NAME[,key=value]...` (CONTRACT.md).
/// `,,` inside a value stands for a comma. Parsing checks only the grammar; each
/// backend reads its options through `SpecReader`, which rejects what it did not read.
public struct BackendSpec: Sendable, CustomStringConvertible {
    public let text: String
    public let name: String
    public let options: [Option]

    public struct Option: Sendable, Equatable {
        public let key: String
        public let value: String
        public init(key: String, value: String) {
            self.key = key
            self.value = value
        }
    }

    public var description: String { text }

    public init(parsing text: String) throws(NetBackendError) {
        self.text = text
        var parts: [String] = []
        var current = ""
        var chars = text.makeIterator()
        var pendingComma = false
        // Split on single commas; a doubled comma is a literal comma.
        while let c = chars.next() {
            if pendingComma {
                pendingComma = false
                if c == "," { current.append(","); continue }
                parts.append(current)
                current = ""
            }
            if c == "," { pendingComma = true } else { current.append(c) }
        }
        if pendingComma {
            throw .badSpec("bad spec '\(text)': it ends with a comma")
        }
        parts.append(current)
        guard let first = parts.first, !first.isEmpty else {
            throw .badSpec("bad spec '\(text)': the backend name is empty")
        }
        if first.contains("=") {
            throw .badSpec("bad spec '\(text)': it must start with a backend name, not '\(first)'")
        }
        name = first
        var opts: [Option] = []
        for part in parts.dropFirst() {
            guard let eq = part.firstIndex(of: "="), eq != part.startIndex else {
                throw .badSpec("bad spec '\(text)': '\(part)' is not key=value")
            }
            opts.append(Option(key: String(part[..<eq]), value: String(part[part.index(after: eq)...])))
        }
        options = opts
    }

    /// Every value given for `key`, in order.
    public func values(_ key: String) -> [String] { options.filter { $0.key == key }.map(\.value) }
}

/// Reads a spec's options for one backend: typed accessors that name the bad part in
/// their error, duplicate detection, and `finish()` which rejects unknown keys.
public final class SpecReader {
    public let spec: BackendSpec
    private let repeatable: Set<String>
    private var consumed: Set<String> = ["type"]

    public init(_ spec: BackendSpec, repeatable: Set<String> = []) {
        self.spec = spec
        self.repeatable = repeatable
    }

    private func bad(_ why: String) -> NetBackendError {
        .badSpec("bad spec '\(spec.text)': \(why)")
    }

    /// The single value of `key`, or nil when absent. Given twice (unless repeatable) or
    /// given empty (`netns=`) is an error naming it.
    public func string(_ key: String) throws(NetBackendError) -> String? {
        consumed.insert(key)
        let vs = spec.values(key)
        if vs.count > 1 && !repeatable.contains(key) { throw bad("'\(key)' is given \(vs.count) times") }
        if vs.contains("") { throw bad("\(key)= has no value") }
        return vs.first
    }

    /// Every value of a repeatable key; an empty one is an error.
    public func strings(_ key: String) throws(NetBackendError) -> [String] {
        consumed.insert(key)
        let vs = spec.values(key)
        if vs.contains("") { throw bad("\(key)= has no value") }
        return vs
    }

    /// A name that is one path component (a namespace under /var/run/netns): not `.` or
    /// `..`, no `/`.
    public func pathComponent(_ key: String) throws(NetBackendError) -> String? {
        guard let v = try string(key) else { return nil }
        if v == "." || v == ".." || v.contains("/") { throw bad("\(key)=\(v): not a name (no '/', not '.' or '..')") }
        return v
    }

    /// Checks a network interface name as the kernel's dev_valid_name (net/core/dev.c)
    /// would: not empty, shorter than IFNAMSIZ (16) bytes, not `.` or `..`, and no `/`,
    /// `:` or whitespace. `%d` is left to the kernel (it picks the number).
    public func interfaceName(_ name: String) throws(NetBackendError) {
        if let why = Self.interfaceNameProblem(name) { throw bad(why) }
    }

    /// Why the kernel would refuse `name` as an interface name, or nil.
    public static func interfaceNameProblem(_ name: String) -> String? {
        if name.isEmpty { return "the interface name is empty" }
        if name.utf8.count > 15 { return "interface name '\(name)' is longer than 15 bytes" }
        if name == "." || name == ".." { return "'\(name)' cannot name an interface" }
        if name.utf8.contains(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: ":") || $0 == 0x20 || (0x09...0x0d).contains($0) }) {
            return "interface name '\(name)' contains '/', ':' or whitespace"
        }
        return nil
    }

    public func bool(_ key: String, default def: Bool) throws(NetBackendError) -> Bool {
        guard let v = try string(key) else { return def }
        switch v {
        case "on": return true
        case "off": return false
        default: throw bad("\(key)=\(v): expected on or off")
        }
    }

    public func int(_ key: String, in range: ClosedRange<Int>) throws(NetBackendError) -> Int? {
        guard let v = try string(key) else { return nil }
        guard let n = Int(v), range.contains(n) else {
            throw bad("\(key)=\(v): expected a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        return n
    }

    public func choice(_ key: String, _ allowed: [String]) throws(NetBackendError) -> String? {
        guard let v = try string(key) else { return nil }
        guard allowed.contains(v) else { throw bad("\(key)=\(v): expected one of \(allowed.joined(separator: ", "))") }
        return v
    }

    /// A unicast Ethernet address `xx:xx:xx:xx:xx:xx`.
    public func mac(_ key: String) throws(NetBackendError) -> [UInt8]? {
        guard let v = try string(key) else { return nil }
        let parts = v.split(separator: ":", omittingEmptySubsequences: false)
        let bytes = parts.compactMap { $0.count == 2 ? UInt8($0, radix: 16) : nil }
        guard parts.count == 6, bytes.count == 6 else { throw bad("\(key)=\(v): expected six hex pairs like 52:54:00:12:34:56") }
        if bytes[0] & 1 != 0 { throw bad("\(key)=\(v): a multicast address cannot name an interface") }
        return bytes
    }

    /// Fails on the first option no accessor asked for.
    public func finish(kind: String) throws(NetBackendError) {
        for o in spec.options where !consumed.contains(o.key) {
            throw bad("unknown option '\(o.key)' for a \(kind) backend")
        }
    }
}
