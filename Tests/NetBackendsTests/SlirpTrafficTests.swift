import Foundation
import Testing

/// Namespace tap <-> `netbe connect` <-> slirp, with libslirp in the helper process
/// (helper=on) and in-process (helper=off): what a guest gets from user-mode networking.
@Suite(.serialized) struct SlirpTrafficTests {
    static let modes = [true, false]

    @Test(arguments: modes) func dhcpLease(helper: Bool) throws {
        let net = try SlirpNetwork(helper: helper)
        let lease = try net.dhcp()
        #expect(lease == "lease 10.0.2.15/24 router 10.0.2.2 dns 10.0.2.3")
        let addr = try sh("ip", "-n", net.ns.name, "-4", "addr", "show", "dev", "tap0")
        #expect(addr.contains("inet 10.0.2.15/24"))
    }

    @Test(arguments: modes) func dhcpHonoursNetOptions(helper: Bool) throws {
        let net = try SlirpNetwork(helper: helper, options: "net=192.168.77.0/24,host=192.168.77.1,dhcpstart=192.168.77.50,dns=192.168.77.53")
        #expect(try net.dhcp() == "lease 192.168.77.50/24 router 192.168.77.1 dns 192.168.77.53")
    }

    @Test(arguments: modes) func tcpAndUDPToHostLoopbackThroughGateway(helper: Bool) throws {
        let web = try LoopbackHTTPServer()
        let echo = try LoopbackUDPEcho()
        let net = try SlirpNetwork(helper: helper)
        try net.dhcp()
        let got = try net.fetch("http://10.0.2.2:\(web.port)/\(web.fileName)")
        #expect(got == web.content, "TCP fetch through the gateway returned \(got?.count ?? -1) bytes, wanted \(web.content.count)")
        let reply = try udpExchange(in: net.ns, host: "10.0.2.2", port: echo.port, message: "hello-udp")
        #expect(reply == "echo:hello-udp")
    }

    /// Enough data that frames cross the helper's socket in full batches and fill it
    /// (sendmmsg/recvmmsg, back-pressure): every byte arrives, in order.
    @Test(arguments: modes) func bulkTransferArrivesWhole(helper: Bool) throws {
        let web = try LoopbackHTTPServer(bytes: 16 << 20)
        let net = try SlirpNetwork(helper: helper)
        try net.dhcp()
        let got = try net.fetch("http://10.0.2.2:\(web.port)/\(web.fileName)", seconds: 60)
        #expect(got == web.content, "bulk fetch returned \(got?.count ?? -1) bytes, wanted \(web.content.count)")
    }

    @Test(arguments: modes) func hostForwardReachesServerInNamespace(helper: Bool) throws {
        let hostPort = try freeLoopbackPort()
        let guestPort = 8080
        let net = try SlirpNetwork(helper: helper, options: "hostfwd=tcp:127.0.0.1:\(hostPort)-:\(guestPort)")
        try net.dhcp()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("nbt-guestwww-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let page = Data("served from the namespace \(UUID().uuidString)\n".utf8)
        try page.write(to: dir.appendingPathComponent("index.html"))
        let server = try net.ns.spawn(["busybox", "httpd", "-f", "-p", "10.0.2.15:\(guestPort)", "-h", dir.path])
        defer { _ = try? server.stop(SIGKILL) }   // a stateless test server
        var got: Data?
        try waitUntil(10, "the forwarded port to answer") {
            got = try hostFetch("http://127.0.0.1:\(hostPort)/index.html")
            return got != nil
        }
        #expect(got == page)
    }

    @Test(arguments: modes) func ipv6RouterAdvertisementAndPingGateway(helper: Bool) throws {
        let net = try SlirpNetwork(helper: helper, options: "ipv6=on,ipv6-prefix=fd00:77::/64")
        try waitUntil(20, "an address from the router advertisement on tap0") {
            let out = try sh("ip", "-n", net.ns.name, "-6", "addr", "show", "dev", "tap0")
            return out.contains("inet6 fd00:77::") && !out.contains("tentative")
        }
        let route = try sh("ip", "-n", net.ns.name, "-6", "route", "show", "default")
        #expect(route.contains("proto ra"), "no default route from the RA: \(route)")
        let ping = try sh(["ip", "netns", "exec", net.ns.name, "ping", "-6", "-c", "2", "-W", "3", "fd00:77::2"], allowFailure: true)
        #expect(ping.contains(" 0% packet loss"), "ping6 to the gateway: \(ping)")
    }

    @Test(arguments: modes) func restrictBlocksOutbound(helper: Bool) throws {
        let web = try LoopbackHTTPServer(bytes: 1024)
        let echo = try LoopbackUDPEcho()
        let net = try SlirpNetwork(helper: helper, options: "restrict=on")
        // DHCP is still served inside the virtual network, without router or DNS
        // (libslirp's restricted mode); the gateway is on-link anyway.
        #expect(try net.dhcp().hasPrefix("lease 10.0.2.15/24 router "))
        #expect(try net.fetch("http://10.0.2.2:\(web.port)/\(web.fileName)", seconds: 3) == nil, "TCP got out with restrict=on")
        #expect(try udpExchange(in: net.ns, host: "10.0.2.2", port: echo.port, message: "x") == nil, "UDP got out with restrict=on")
    }

    @Test(arguments: modes) func runsAsNonRootUser(helper: Bool) throws {
        let web = try LoopbackHTTPServer(bytes: 64 * 1024)
        let net = try SlirpNetwork(helper: helper, extra: ["--user", "nobody"])
        let nobody = Int(try sh("id", "-u", "nobody").trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(processUID(net.netbe.pid) == nobody, "netbe still runs as uid \(processUID(net.netbe.pid) ?? -1)")
        if helper {
            let pid = try #require(net.helperPID())
            #expect(processUID(pid) == nobody)
        }
        // The tap fd opened as root keeps working after the drop.
        try net.dhcp()
        #expect(try net.fetch("http://10.0.2.2:\(web.port)/\(web.fileName)") == web.content)
    }
}
