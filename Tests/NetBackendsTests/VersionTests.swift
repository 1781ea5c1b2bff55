import NetBackends
import Testing

/// `netbe --version` answers with the library's version, one line, exit 0.
@Suite struct VersionTests {
    @Test func versionIsSemantic() {
        let parts = NetBackendsVersion.string.split(separator: ".", omittingEmptySubsequences: false)
        #expect(parts.count == 3 && parts.allSatisfy { UInt($0) != nil }, "not MAJOR.MINOR.PATCH: \(NetBackendsVersion.string)")
    }

    @Test func netbeVersionPrintsTheLibraryVersion() throws {
        let r = try NetbeBinary.run(["--version"])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        #expect(r.stdout == NetBackendsVersion.string + "\n", "stdout: \(r.stdout)")
        #expect(r.stderr.isEmpty, "stderr: \(r.stderr)")
    }
}
