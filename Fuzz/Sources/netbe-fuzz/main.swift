import FuzzDriver
@_spi(Fuzzing) import NetBackends
#if canImport(Glibc)
import Glibc
#endif

// One libFuzzer executable for every target: `netbe-fuzz TARGET [libFuzzer arguments]`.
// The target names are the corpus folders (Corpus/TARGET/).
let targets: [String: @Sendable (UnsafeRawBufferPointer) -> Void] = [
    "fuzz-spec": SpecFuzzing.run,
    "fuzz-stream": StreamDeframerFuzzing.run,
    "fuzz-seqpacket": SeqpacketFuzzing.run,
    "fuzz-slirp-input": SlirpInputFuzzing.run,
    "fuzz-virtio-net": VirtioNetFuzzing.run,
    "fuzz-offload": OffloadFuzzing.run,
    "fuzz-virtqueue": VirtqueueFuzzing.run,
]

/// The target this run feeds; set once, before libFuzzer starts calling.
nonisolated(unsafe) var selected: (@Sendable (UnsafeRawBufferPointer) -> Void)?

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    selected?(UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size))
    return 0
}

let arguments = CommandLine.arguments
guard arguments.count > 1, let target = targets[arguments[1]] else {
    let names = targets.keys.sorted().joined(separator: ", ")
    let usage = "usage: netbe-fuzz TARGET [libFuzzer arguments]; TARGET is one of \(names)\n"
    _ = usage.withCString { write(2, $0, strlen($0)) }
    exit(2)
}
selected = target
// libFuzzer sees the program and its own arguments, without the target's name.
var argv: [UnsafeMutablePointer<CChar>?] = [CommandLine.unsafeArgv[0]]
for i in 2..<Int(CommandLine.argc) { argv.append(CommandLine.unsafeArgv[i]) }
argv.append(nil)
exit(argv.withUnsafeMutableBufferPointer { fuzz_driver_run(Int32($0.count - 1), $0.baseAddress) })
