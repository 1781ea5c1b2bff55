// swift-tools-version: 6.1
// The ring module's benchmark (not in CI): frames per second through NetmapRingSender /
// NetmapRingReceiver between two threads and between two processes over a memfd, with the
// allocations made per frame (malloc-interposer linked in, as the tests use it).
import PackageDescription

let package = Package(
    name: "rings-bench",
    dependencies: [
        .package(name: "NetBackends", path: "../.."),
        .package(url: "https://github.com/ordo-one/malloc-interposer.git", from: "1.6.1"),
    ],
    targets: [
        .executableTarget(
            name: "rings-bench",
            dependencies: [
                .product(name: "NetBackends", package: "NetBackends"),
                .product(name: "MallocInterposerSwift", package: "malloc-interposer"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
