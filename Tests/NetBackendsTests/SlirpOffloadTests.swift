import Foundation
import Testing

/// Offloads across the slirp backend, against the kernel's own TCP in a namespace: with a
/// tap that takes TSO, the namespace's 64 KiB super-frames are cut in software for
/// libslirp, and libslirp's segments reach the namespace joined into super-frames; the
/// kernel must accept every one (the bytes arrive, sha256 checked). Without offloads
/// (`offload=off`, `vnet=off`) nothing is joined or cut. In both helper modes, since the
/// helper's link carries the virtio-net header across the process boundary.
@Suite(.serialized) struct SlirpOffloadTests {
    static let helperModes = [true, false]
    static let tapModes = ["", "offload=off", "vnet=off"]

    /// Sends `bytes` from the namespace to a server on the host's `address`, reached at
    /// the slirp gateway `gateway`, and checks that they arrived whole (sha256).
    static func upload(from net: SlirpNetwork, to address: String, through gateway: String, bytes: Int, seed: Int) throws {
        let port = try freeLoopbackPort()
        let server = try TestProcess([debianPython, "-c", TcpTransfer.script, "server", address, String(port), "0"])
        defer { _ = try? server.stop(SIGKILL) }
        try server.waitForLine("listening")
        let client = try TcpTransfer.client(in: net.ns, host: gateway, port: port, bytes: bytes, seed: seed)
        let sent = try TcpTransfer.result(client, "sent")
        let received = try TcpTransfer.result(server, "received")
        #expect(received.bytes == bytes && received.sha256 == sent.sha256, "upload: sent \(sent), received \(received)")
    }

    @Test(arguments: helperModes, tapModes) func bulkBothWaysWithAndWithoutOffloads(helper: Bool, tap: String) throws {
        let size = 16 << 20
        let web = try LoopbackHTTPServer(bytes: size)
        let net = try SlirpNetwork(helper: helper, tapOptions: tap)
        try net.dhcp()

        // Namespace -> host: the kernel's TSO frames, cut for libslirp.
        try Self.upload(from: net, to: "127.0.0.1", through: "10.0.2.2", bytes: size, seed: 11)

        // Host -> namespace: libslirp's segments, joined for the tap.
        let got = try net.fetch("http://10.0.2.2:\(web.port)/\(web.fileName)", seconds: 60)
        #expect(got == web.content, "download returned \(got?.count ?? -1) bytes, wanted \(size)")

        #expect(try net.netbe.stop() == 0)
        let counters = try NetbeBinary.counters(net.netbe.stdout)
        let up = try #require(counters.first { ($0["from"] as? String)?.hasSuffix("tap0") == true })
        let down = try #require(counters.first { ($0["to"] as? String)?.hasSuffix("tap0") == true })
        let upGSO = up["gso_frames"] as? Int ?? -1, upCut = up["sw_segmented"] as? Int ?? -1
        let downGSO = down["gso_frames"] as? Int ?? -1
        if tap.isEmpty {
            #expect(upGSO > 0, "the namespace's TSO frames should reach slirp: \(up)")
            #expect(upCut == upGSO, "every GSO frame to slirp is cut in software: \(up)")
            #expect(downGSO > 0, "slirp's segments should reach the tap joined: \(down)")
        } else {
            #expect(upGSO == 0 && upCut == 0 && downGSO == 0, "no offloads were negotiated: \(up) \(down)")
        }
        let drops = [up, down].compactMap { $0["drops"] as? [String: Int] }.flatMap { $0.values }.reduce(0, +)
        #expect(drops == 0, "no frame dropped: \(up) \(down)")
    }

    /// The same over IPv6 (TSO6 cut for libslirp, segments joined as TCPV6 super-frames):
    /// 16 MiB each way between the namespace and a server on the host's ::1, reached
    /// through the gateway address of the router advertisement, sha256 checked.
    @Test(arguments: helperModes) func ipv6BulkBothWaysWithOffloads(helper: Bool) throws {
        let size = 16 << 20
        let net = try SlirpNetwork(helper: helper, options: "ipv6=on,ipv6-prefix=fd00:78::/64")
        try waitUntil(20, "an address from the router advertisement on tap0") {
            let out = try sh("ip", "-n", net.ns.name, "-6", "addr", "show", "dev", "tap0")
            return out.contains("inet6 fd00:78::") && !out.contains("tentative")
        }
        // Namespace -> host.
        try Self.upload(from: net, to: "::1", through: "fd00:78::2", bytes: size, seed: 21)

        // Host -> namespace: the host side sends on accept, the namespace reads to the end.
        let sender = """
            import hashlib, random, socket, sys
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("::1", int(sys.argv[1]))); s.listen(1); print("listening", flush=True)
            c, _ = s.accept(); data = random.Random(22).randbytes(int(sys.argv[2]))
            c.sendall(data); c.close(); print("sent", len(data), hashlib.sha256(data).hexdigest(), flush=True)
            """
        let reader = """
            import hashlib, socket, sys
            c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60); h = hashlib.sha256(); n = 0
            while True:
                b = c.recv(1 << 20)
                if not b: break
                h.update(b); n += len(b)
            print("received", n, h.hexdigest(), flush=True)
            """
        let port2 = try freeLoopbackPort()
        let source = try TestProcess([debianPython, "-c", sender, String(port2), String(size)])
        defer { _ = try? source.stop(SIGKILL) }
        try source.waitForLine("listening")
        let sink = try net.ns.spawn([debianPython, "-c", reader, "fd00:78::2", String(port2)])
        let down = try TcpTransfer.result(sink, "received")
        let up = try TcpTransfer.result(source, "sent")
        #expect(down.bytes == size && down.sha256 == up.sha256, "download: sent \(up), received \(down)")

        #expect(try net.netbe.stop() == 0)
        let counters = try NetbeBinary.counters(net.netbe.stdout)
        let toSlirp = try #require(counters.first { ($0["from"] as? String)?.hasSuffix("tap0") == true })
        let toTap = try #require(counters.first { ($0["to"] as? String)?.hasSuffix("tap0") == true })
        #expect((toSlirp["sw_segmented"] as? Int ?? 0) > 0, "no TSO6 frame was cut for libslirp: \(toSlirp)")
        #expect((toTap["gso_frames"] as? Int ?? 0) > 0, "no TCPV6 super-frame reached the tap: \(toTap)")
    }
}
