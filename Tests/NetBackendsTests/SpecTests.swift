import Testing
import NetBackends

@Suite struct SpecTests {
    @Test func parsesNameAndOptions() throws {
        let s = try BackendSpec(parsing: "tap0,netns=ns1,mtu=9000")
        #expect(s.name == "tap0")
        #expect(s.options.map { "\($0.key)=\($0.value)" } == ["netns=ns1", "mtu=9000"])
    }
}
