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

    @Test(arguments: helperModes, tapModes) func bulkBothWaysWithAndWithoutOffloads(helper: Bool, tap: String) throws {
        let size = 16 << 20
        let web = try LoopbackHTTPServer(bytes: size)
        let net = try SlirpNetwork(helper: helper, tapOptions: tap)
        try net.dhcp()

        // Namespace -> host: the kernel's TSO frames, cut for libslirp.
        let port = try freeLoopbackPort()
        let server = try TestProcess([debianPython, "-c", TcpTransfer.script, "server", "127.0.0.1", String(port), "0"])
        defer { _ = try? server.stop(SIGKILL) }
        try server.waitForLine("listening")
        let client = try TcpTransfer.client(in: net.ns, host: "10.0.2.2", port: port, bytes: size, seed: 11)
        let sent = try TcpTransfer.result(client, "sent")
        let received = try TcpTransfer.result(server, "received")
        #expect(received.bytes == size && received.sha256 == sent.sha256, "upload: sent \(sent), received \(received)")

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
}
