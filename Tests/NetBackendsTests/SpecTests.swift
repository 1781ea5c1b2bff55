import Testing
import NetBackends

@Suite struct SpecTests {
    @Test func parsesNameAndOptions() throws {
        let s = try BackendSpec(parsing: "tap0,netns=ns1,mtu=9000")
        #expect(s.name == "tap0")
        #expect(s.options == [.init(key: "netns", value: "ns1"), .init(key: "mtu", value: "9000")])
    }
}
