// swift-tools-version: 6.1
// libFuzzer targets for NetBackends, outside the main package so that nothing there is
// built with the fuzzer's instrumentation. Build and run (see README.md here):
//   swift build -c release -Xswiftc -sanitize=fuzzer,address -Xswiftc -g
//   .build/release/netbe-fuzz fuzz-spec Corpus/fuzz-spec -max_total_time=60
import PackageDescription

let package = Package(
    name: "NetBackendsFuzz",
    // `name:` because a path package is otherwise named after its directory (the clone).
    dependencies: [.package(name: "NetBackends", path: "..")],
    targets: [
        // Calls libFuzzer's driver from a Swift `main` (SwiftPM renames an executable's
        // own `main`, so libFuzzer's would never run).
        .target(name: "FuzzDriver"),
        // Every target in one executable, chosen by its first argument (see main.swift).
        .executableTarget(name: "netbe-fuzz", dependencies: ["FuzzDriver", .product(name: "NetBackends", package: "NetBackends")]),
    ],
    swiftLanguageModes: [.v6]
)
