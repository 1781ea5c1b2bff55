// swift-tools-version: 6.1
// A program that uses NetBackends as a downstream package would: by path here (from a
// clone: .package(url: "https://.../NetBackends.git", from: "0.4.0")). Its main.swift
// is the README's library example, line for line; .ci/run builds and runs it.
import PackageDescription

let package = Package(
    name: "QuickStart",
    // `name:` because a path package is otherwise named after its directory (the clone).
    dependencies: [.package(name: "NetBackends", path: "../..")],
    targets: [
        .executableTarget(name: "QuickStart", dependencies: [.product(name: "NetBackends", package: "NetBackends")]),
    ],
    swiftLanguageModes: [.v6]
)
