// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "NetBackends",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "NetBackends", targets: ["NetBackends"]),
        .executable(name: "netbe", targets: ["netbe"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.8.1"),
        // Tests only: counts allocations so a test can say the relay allocates nothing per frame.
        .package(url: "https://github.com/ordo-one/malloc-interposer.git", from: "1.6.1"),
    ],
    targets: [
        // Only what Swift cannot reach: ioctl request numbers built by _IOW macros,
        // struct ifreq handling and setns on a raw thread.
        .target(name: "CNetBackends"),
        // libslirp, the user-mode TCP/IP stack behind the `slirp` backend (issue 4).
        .systemLibrary(
            name: "CSlirp",
            pkgConfig: "slirp",
            providers: [.apt(["libslirp-dev", "libglib2.0-dev"])]
        ),
        .target(
            name: "NetBackends",
            dependencies: [
                "CNetBackends",
                "CSlirp",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        .executableTarget(
            name: "netbe",
            dependencies: [
                "NetBackends",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "NetBackendsTests",
            dependencies: [
                "NetBackends",
                .product(name: "MallocInterposerSwift", package: "malloc-interposer"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
