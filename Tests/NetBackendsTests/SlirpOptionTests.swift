import Foundation
import Testing

/// Spec errors of the slirp backend: exit status 2 and one stderr line naming the bad
/// part (CONTRACT.md), in-process and through the helper.
@Suite struct SlirpOptionTests {
    static let badSpecs: [(spec: String, names: String)] = [
        ("slirp,net=10.0.2.0/33", "net=10.0.2.0/33"),
        ("slirp,net=banana", "net=banana"),
        ("slirp,host=10.9.9.9", "host=10.9.9.9"),
        ("slirp,dhcpstart=10.0.2.255", "dhcpstart=10.0.2.255"),
        ("slirp,dns=nope", "dns=nope"),
        ("slirp,ipv6=maybe", "ipv6=maybe"),
        ("slirp,ipv6-prefix=fec0::/200", "ipv6-prefix=fec0::/200"),
        ("slirp,restrict=yes", "restrict=yes"),
        ("slirp,mtu=10", "mtu=10"),
        ("slirp,hostfwd=tcp::80", "hostfwd=tcp::80"),
        ("slirp,hostfwd=tcp::99999-:80", "host port '99999'"),
        ("slirp,hostfwd=tcp::8080-1.2.3:80", "guest address '1.2.3'"),
        ("slirp,colour=blue", "colour"),
        ("slirp,mtu=1500,mtu=1400", "'mtu' is given 2 times"),
    ]

    @Test(arguments: badSpecs) func badOptionIsOneClearLine(_ c: (spec: String, names: String)) throws {
        let r = try NetbeBinary.run(["probe", c.spec])
        #expect(r.status == 2)
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1, "stderr: \(r.stderr)")
        #expect(r.stderr.contains(c.names), "stderr does not name '\(c.names)': \(r.stderr)")
        #expect(r.stdout.isEmpty)
    }

    @Test(arguments: ["on", "off"]) func hostForwardPortInUseIsNamed(helper: String) throws {
        // Hold a listening socket on a loopback port, then ask slirp to forward it.
        let (s, port) = try bindLoopback()
        defer { close(s) }
        try #require(listen(s, 1) == 0)
        let r = try NetbeBinary.run(["probe", "slirp,helper=\(helper),hostfwd=tcp:127.0.0.1:\(port)-:22"])
        #expect(r.status == 2)
        #expect(r.stderr.split(separator: "\n").count == 1, "stderr: \(r.stderr)")
        #expect(r.stderr.contains("host port \(port)") && r.stderr.contains("Address already in use"), "stderr: \(r.stderr)")
    }

    @Test(arguments: ["on", "off"]) func validSpecProbes(helper: String) throws {
        // Two forwards in one value, separated by ';' as bhyve writes them.
        let udp = try freeLoopbackPort(udp: true), tcp = try freeLoopbackPort()
        let spec = "user,helper=\(helper),hostfwd=udp:127.0.0.1:\(udp)-:53;tcp:127.0.0.1:\(tcp)-:22,mtu=9000,ipv6=off,restrict=on"
        let r = try NetbeBinary.run(["probe", "--json", spec])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        #expect(r.stdout.contains("\"kind\":\"slirp\""))
    }

    @Test func listedAsAvailable() throws {
        let r = try NetbeBinary.run(["backends"])
        let line = r.stdout.split(separator: "\n").first { $0.hasPrefix("slirp") }
        #expect(line?.contains("slirp user") == true && line?.contains("available") == true, "\(r.stdout)")
    }
}
