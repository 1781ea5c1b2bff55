import Foundation
import Testing

/// Bounded soak: many peers coming and going and many helper restarts leave netbe's
/// descriptors and resident memory where they were after a warm-up.
@Suite(.serialized) struct SoakTests {
    @Test(.timeLimit(.minutes(2)))
    func streamPeersAndHelperRestartsLeaveDescriptorsAndMemoryFlat() throws {
        try requireDebianPython()
        let socket = TestSocketPath("soak")
        // Restarts here come faster than a helper that cannot run would allow.
        let netbe = try TestProcess([try NetbeBinary.path, "connect", "stream,listen=unix:\(socket.path)", "slirp"],
                                    environment: ProcessInfo.processInfo.environment.merging(["NETBE_SLIRP_RESTART_LIMIT": "1000/1"]) { $1 })
        try netbe.waitForLine("ready")
        defer { _ = try? netbe.stop() }
        let started = Date()

        func peers(_ count: Int) throws {
            let p = try TestProcess([debianPython, "-c", Self.peers, socket.path, String(count)])
            #expect(try p.wait(seconds: 60) == 0, "the peers failed: \(p.stderr)")
        }
        func restarts() -> Int { netbe.stderr.components(separatedBy: "slirp helper restarted").count - 1 }
        func killHelper() throws {
            let before = restarts()
            let helper = try #require(childPIDs(of: netbe.pid).first, "no slirp helper under netbe: \(netbe.stderr)")
            kill(helper, SIGKILL)
            try waitUntil(10, "the helper's restart \(before + 1)") { restarts() > before || !netbe.isRunning }
            #expect(netbe.isRunning, "netbe ended: \(netbe.stderr)")
        }

        // Warm-up: the first peers and restarts may grow pools and caches once.
        try peers(30)
        for _ in 0..<5 { try killHelper() }
        let fdsBefore = try openDescriptors(netbe.pid)
        let rssBefore = try residentKiB(netbe.pid)

        for round in 0..<9 {
            try peers(30)
            for _ in 0..<5 { try killHelper() }
            _ = round
        }
        // A restart's last timer and a leaving peer's socket close a moment after the log
        // line the loop above waits for: growth is what stays, so give them a second.
        var fdsAfter = try openDescriptors(netbe.pid)
        let settle = Date().addingTimeInterval(2)
        while fdsAfter != fdsBefore && Date() < settle {
            usleep(50_000)
            fdsAfter = try openDescriptors(netbe.pid)
        }
        let rssAfter = try residentKiB(netbe.pid)
        let seconds = Date().timeIntervalSince(started)
        print("soak: 300 stream peers, \(restarts()) helper restarts in \(Int(seconds)) s; fds \(fdsBefore) -> \(fdsAfter), VmRSS \(rssBefore) -> \(rssAfter) KiB")
        #expect(restarts() == 50)
        let list = (try? descriptorList(netbe.pid)) ?? []
        #expect(fdsAfter == fdsBefore, "descriptors went from \(fdsBefore) to \(fdsAfter): \(list)")
        #expect(rssAfter - rssBefore < 4096, "resident memory grew by \(rssAfter - rssBefore) KiB")
        #expect(childPIDs(of: netbe.pid).count == 1, "netbe has other children than one helper (zombies?)")
        #expect(seconds < 60, "the soak took \(Int(seconds)) s")
    }

    /// Stream peers one after another: each connects, sends an ARP request for the
    /// gateway (which libslirp answers, so netbe writes towards a peer that is leaving),
    /// waits a moment and closes.
    static let peers = #"""
import socket, struct, sys, time
path, count = sys.argv[1], int(sys.argv[2])
arp = (b"\xff" * 6 + b"\x52\x54\x00\x12\x34\x56" + b"\x08\x06" +
       struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + b"\x52\x54\x00\x12\x34\x56" + bytes([10, 0, 2, 15]) +
       b"\x00" * 6 + bytes([10, 0, 2, 2]))
for i in range(count):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    for attempt in range(100):
        try:
            s.connect(path)
            break
        except OSError:
            time.sleep(0.01)
    s.sendall(struct.pack("!I", len(arp)) + arp)
    time.sleep(0.005)
    s.close()
"""#
}

/// How many descriptors `pid` has open (/proc/PID/fd).
func openDescriptors(_ pid: Int32) throws -> Int {
    try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count
}

/// What `pid`'s descriptors point at, for a failure message.
func descriptorList(_ pid: Int32) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").sorted().map {
        "\($0) -> " + ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)")) ?? "?")
    }
}

/// `pid`'s resident memory in KiB (VmRSS in /proc/PID/status).
func residentKiB(_ pid: Int32) throws -> Int {
    let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
    guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
          let kib = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first.flatMap({ Int($0) }) else {
        throw TestFailure("no VmRSS in /proc/\(pid)/status")
    }
    return kib
}
