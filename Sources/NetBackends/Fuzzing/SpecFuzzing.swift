/// Fuzzing entry point (Fuzz/, `@_spi(Fuzzing)`): a spec as a user could type it goes
/// through everything that reads a spec before a backend opens anything: the grammar,
/// the kind lookup, the typed option readers, the slirp options and socket addresses.
/// Any input may be refused with `.badSpec`; none may trap. A spec that parses must
/// parse again, to the same name and options, from its options written back out.
@_spi(Fuzzing) public enum SpecFuzzing {
    public static func run(_ data: UnsafeRawBufferPointer) {
        let text = String(decoding: data, as: UTF8.self)
        guard let spec = try? BackendSpec(parsing: text) else { return }
        let escaped = ([spec.name] + spec.options.map { "\($0.key)=\($0.value)" })
            .map(\.commasDoubled)
            .joined(separator: ",")
        guard let again = try? BackendSpec(parsing: escaped), again.name == spec.name, again.options == spec.options else {
            fatalError("spec '\(text)' written back as '\(escaped)' does not parse to the same options")
        }
        _ = try? BackendRegistry.shared.kind(for: spec)
        let reader = SpecReader(spec, repeatable: ["hostfwd"])
        for option in spec.options {
            _ = try? reader.bool(option.key, default: false)
            _ = try? reader.int(option.key, in: 0...65535)
            _ = try? reader.mac(option.key)
            _ = try? NetSocketAddress(parsing: option.value)
        }
        _ = try? reader.finish(kind: spec.name)
        _ = try? SlirpConfiguration(SpecReader(spec, repeatable: ["hostfwd"]))
    }
}

extension String {
    /// The text with every comma doubled, as a spec writes a literal comma.
    fileprivate var commasDoubled: String {
        var out = ""
        for c in self { if c == "," { out += ",," } else { out.append(c) } }
        return out
    }
}
