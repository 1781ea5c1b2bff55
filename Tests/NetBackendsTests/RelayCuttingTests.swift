import CNetBackends
import Foundation
import NetBackends
import Testing

/// The relay cutting TSO super-frames for a side that takes none (`sw_segmented`), and
/// joining a plain side's segments for a side that takes TSO, under back-pressure. Also
/// end to end: two netbe joined by a plain stream, each reading 64 KiB frames from its
/// offloading tap. The far netbe is stopped mid-transfer, so the near one's socket fills
/// while a super-frame is half cut; after SIGCONT the cutting must go on from the segment
/// it stopped at: every byte arrives once, in order (sha256), nothing is dropped.
@Suite(.serialized) struct RelayCuttingTests {
    /// The same in one process, segment by segment: a source that hands out one TSO frame
    /// of 60 segments, a datagram sink with a small send buffer (a few segments in flight),
    /// read slowly. The relay blocks mid-cut again and again; what arrives must be exactly the
    /// 60 segments, in order, each with its own sequence number and valid checksums.
    @Test(.timeLimit(.minutes(1))) func cutResumesAtTheSegmentWhereTheSinkBlocked() throws {
        let loop = try NetEventLoop()
        let source = try DatagramPairBackend(loop: loop, headerLength: 12, offloads: [.guestCsum, .guestTSO4, .guestTSO6])
        let sink = try DatagramPairBackend(loop: loop, sendBuffer: 4096)
        defer { source.close(); sink.close() }
        let relay = try Relay(source, sink)
        #expect(source.negotiatedFeatures.isSuperset(of: [.guestCsum, .guestTSO4]), "\(source.negotiatedFeatures)")
        let lt = try LoopThread(loop)
        try lt.sync { relay.start() }

        let mss = 100, segments = 60
        let data = OffloadTests.payload(mss * segments, seed: 5)
        let firstSequence: UInt32 = 0xffff_ff00   // wraps inside the frame
        let superFrame = OffloadTests.segment(seq: firstSequence, payload: data, id: 1)
        var header = [UInt8](repeating: 0, count: 12)
        header.withUnsafeMutableBytes {
            VirtioNetHeader(flags: .needsCsum, gsoType: .tcpv4, headerLength: 54, gsoSize: UInt16(mss),
                            csumStart: 34, csumOffset: 16).encode(into: $0)
        }
        let datagram = header + superFrame
        #expect(datagram.withUnsafeBytes { send(source.peer, $0.baseAddress, $0.count, 0) } == datagram.count)

        var got: [[UInt8]] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        // Nothing is read until the sink has pushed back once, however slow the relay
        // runs (a sanitizer, a loaded machine): the cut must resume where it stopped.
        try Self.awaitPushBack(sink, lt)
        let deadline = Date().addingTimeInterval(20)
        while got.count < segments && Date() < deadline {
            usleep(2_000)   // slower than the relay: its sends keep finding the queue full
            let n = recv(sink.peer, &buffer, buffer.count, cnb_MSG_DONTWAIT)
            if n > 0 { got.append(Array(buffer[0..<n])) }
        }
        #expect(got.count == segments, "got \(got.count) of \(segments) segments")
        var rebuilt: [UInt8] = []
        for (i, s) in got.enumerated() {
            #expect(s.count == 54 + mss, "segment \(i) length \(s.count)")
            #expect(OffloadTests.checksumsValid(s), "segment \(i) checksums")
            #expect(OffloadTests.field32(s, 38) == firstSequence &+ UInt32(i * mss), "segment \(i) sequence")
            rebuilt += s.dropFirst(54)
        }
        #expect(rebuilt == data)
        try lt.sync { relay.stop() }
        let stats = relay.forward.statistics
        #expect(sink.blockedSends > 0, "the sink never pushed back: the test did not test resuming")
        #expect(stats.frames == 1 && stats.gsoFrames == 1 && stats.softwareSegmented == 1 && stats.totalDrops == 0,
                "frames \(stats.frames) gso \(stats.gsoFrames) cut \(stats.softwareSegmented) drops \(stats.totalDrops)")
        #expect(try lt.stop() == nil)
    }

    /// The other way: a plain source's 200 wire segments toward a sink that takes TSO and
    /// pushes back (a send buffer of one super-frame, read slowly). What arrives must
    /// be super-frames (far fewer datagrams than segments) that, cut again, give back
    /// exactly the 200 segments, in order.
    @Test(.timeLimit(.minutes(1))) func plainSegmentsAreJoinedAndSurviveBackPressure() throws {
        let loop = try NetEventLoop()
        let source = try DatagramPairBackend(loop: loop)
        let sink = try DatagramPairBackend(loop: loop, headerLength: 12, offloads: [.csum, .hostTSO4, .hostTSO6], sendBuffer: 40_000)
        defer { source.close(); sink.close() }
        let relay = try Relay(source, sink)
        #expect(sink.negotiatedFeatures.isSuperset(of: [.csum, .hostTSO4]), "\(sink.negotiatedFeatures)")
        let wire = OffloadTests.flow(ipv6: false, count: 200, mss: 1000, lastLength: 300)
        let lt = try LoopThread(loop)
        try lt.sync { relay.start() }

        var datagrams: [[UInt8]] = []
        var cut: [[UInt8]] = []
        var buffer = [UInt8](repeating: 0, count: 70_000)
        var written = 0
        var pushedBack = false
        let pushDeadline = Date().addingTimeInterval(10)
        let deadline = Date().addingTimeInterval(30)
        while cut.count < wire.count && Date() < deadline {
            // Write as the source's socket takes them (it holds fewer than 200), and read
            // the sink slower than the relay writes it, and only once it has pushed back
            // (see awaitPushBack).
            while written < wire.count,
                  wire[written].withUnsafeBytes({ send(source.peer, $0.baseAddress, $0.count, cnb_MSG_DONTWAIT) }) > 0 {
                written += 1
            }
            usleep(10_000)
            if !pushedBack {
                pushedBack = try lt.sync { sink.blockedSends > 0 } || Date() > pushDeadline
                if !pushedBack { continue }
            }
            let n = recv(sink.peer, &buffer, buffer.count, cnb_MSG_DONTWAIT)
            guard n > 12 else { continue }
            let d = Array(buffer[0..<n])
            datagrams.append(d)
            let header = d.withUnsafeBytes { VirtioNetHeader(decoding: UnsafeRawBufferPointer(rebasing: $0[0..<12])) }
            let body = Array(d[12...])
            guard let header, header.isGSO else { cut.append(body); continue }
            #expect(header.gsoType == .tcpv4 && header.flags == [.needsCsum] && header.gsoSize == 1000, "\(header)")
            cut += OffloadTests.cut(body, gsoSize: Int(header.gsoSize))
        }
        #expect(cut.count == wire.count && cut == wire, "got \(cut.count) segments back from \(datagrams.count) datagrams, equal: \(cut == wire)")
        #expect(datagrams.count <= wire.count / 4, "too little was joined: \(datagrams.count) datagrams")
        try lt.sync { relay.stop() }
        #expect(try lt.stop() == nil)
        #expect(sink.blockedSends > 0, "the sink never pushed back: the test did not test resuming")
        let stats = relay.forward.statistics
        #expect(stats.frames == UInt64(wire.count) && stats.gsoFrames > 0 && stats.totalDrops == 0,
                "frames \(stats.frames) gso \(stats.gsoFrames) drops \(stats.totalDrops)")
    }

    /// Waits (at most 10 s) until the relay found `sink`'s queue full once. Read on the
    /// loop thread, which owns the count.
    static func awaitPushBack(_ sink: DatagramPairBackend, _ lt: LoopThread) throws {
        let deadline = Date().addingTimeInterval(10)
        while try !(lt.sync { sink.blockedSends > 0 }), Date() < deadline { usleep(2_000) }
    }

    @Test func superFrameCutForPlainStreamSurvivesAStoppedPeer() throws {
        try requireTool("python3", package: "python3")
        let sock = TestSocketPath("cut")
        let rig = try TwoTapRig(left: "stream,listen=unix:\(sock.path)", right: "stream,connect=unix:\(sock.path)", label: "cut")
        try rig.waitPing()
        let size = 64 << 20
        let server = try TcpTransfer.server(in: rig.b, host: "10.77.0.2", port: 5201, progressAfter: 8 << 20)
        let client = try TcpTransfer.client(in: rig.a, host: "10.77.0.2", port: 5201, bytes: size, seed: 77)
        try server.waitForLine("progress", seconds: 30)
        let far = try #require(rig.right)
        far.signal(SIGSTOP)
        usleep(1_500_000)   // the stream's socket buffers fill; the near netbe must hold the cut
        far.signal(SIGCONT)
        let sent = try TcpTransfer.result(client, "sent")
        let received = try TcpTransfer.result(server, "received")
        #expect(received.bytes == size && received.sha256 == sent.sha256, "sent \(sent), received \(received)")
        let (left, right) = try rig.stop()
        let near = try #require(left.first { ($0["from"] as? String)?.hasSuffix("tap0") == true })
        let gso = near["gso_frames"] as? Int ?? -1
        #expect(gso > 0, "the near netbe read no super-frame from its tap: \(near)")
        #expect(near["sw_segmented"] as? Int == gso, "every super-frame is cut for the plain stream: \(near)")
        // `no_peer` is left out: the two netbe stop one after the other, and a frame the
        // namespace sends in between finds no peer, which is not the cutting's doing.
        for d in left + right {
            let drops = (d["drops"] as? [String: Int])?.filter { $0.key != "no_peer" }.values.reduce(0, +) ?? -1
            #expect(drops == 0, "\(d)")
        }
    }
}
