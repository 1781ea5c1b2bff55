// swift-tools-version: 6.1
// Builds the two libraries that bench/tap-relay preloads into `netbe connect` to count
// its allocations: ordo-one's interposer (which replaces malloc and keeps the counters)
// and a tiny agent (which turns counting on and writes a snapshot on SIGUSR1).
// Kept apart from the main package so NetBackends never depends on the interposer.
import PackageDescription

let package = Package(
    name: "netbe-malloc-count",
    products: [
        .library(name: "NetbeMallocAgent", type: .dynamic, targets: ["NetbeMallocAgent"]),
    ],
    dependencies: [
        .package(url: "https://github.com/ordo-one/malloc-interposer.git", from: "1.6.1"),
    ],
    targets: [
        // No link-time dependency on the interposer: the agent finds its functions with
        // dlsym at load time, so it never embeds a second copy of the counters.
        .target(name: "NetbeMallocAgent", linkerSettings: [.linkedLibrary("dl"), .linkedLibrary("pthread")]),
    ]
)
