import Foundation
import NetBackends
import Testing

/// What `netbe` says about netmap on this host: the truth about `/dev/netmap`.
@Suite struct NetmapBackendTests {
    static var hasNetmap: Bool { FileManager.default.fileExists(atPath: "/dev/netmap") }

    /// Without the kernel module, `netbe probe netmap:lo` exits 3 (unavailable here,
    /// CONTRACT.md) with one line naming the missing device.
    @Test(.enabled(if: !hasNetmap, "this host has /dev/netmap"))
    func probeWithoutDevNetmapExits3NamingIt() throws {
        let r = try NetbeBinary.run(["probe", "netmap:lo"])
        #expect(r.status == 3)
        #expect(r.stderr.contains("/dev/netmap") && r.stderr.contains("netmap:lo"), "stderr: \(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1)
        #expect(r.stdout.isEmpty)
        // Through the library: the same error, status 3.
        let loop = try NetEventLoop()
        #expect { _ = try BackendRegistry.shared.open("netmap:lo", on: loop) } throws: { error in
            guard let e = error as? NetBackendError, case .unavailable = e else { return false }
            return e.exitStatus == 3
        }
    }

    /// `netbe backends` marks the kernel path untested here and why.
    @Test func backendsSaysWhetherDevNetmapExists() throws {
        let r = try NetbeBinary.run(["backends"])
        #expect(r.status == 0)
        let line = r.stdout.split(separator: "\n").first { $0.hasPrefix("netmap ") }
        let expected = Self.hasNetmap ? "untested here: written against netmap's API 14" : "untested here: no /dev/netmap"
        #expect(line?.contains(expected) == true, "netmap line: \(line ?? "none")")
        let vale = r.stdout.split(separator: "\n").first { $0.hasPrefix("vale ") }
        // vale ports are netbe's own switch's now (issue 10), whatever the host.
        #expect(vale?.hasSuffix(" available") == true, "vale line: \(vale ?? "none")")
    }

    /// Names the kernel would not take are bad specs (exit 2), whatever the host.
    @Test(arguments: ["netmap:", "netmap:em0,foo=1", "netmap:a/b", "netmap:abcdefghijklmnop"])
    func badNetmapSpecsExit2(spec: String) throws {
        let r = try NetbeBinary.run(["probe", spec])
        #expect(r.status == 2, "\(spec): \(r.stderr)")
    }
}
