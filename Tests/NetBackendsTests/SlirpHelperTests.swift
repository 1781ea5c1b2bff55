import Foundation
import Testing

/// The privilege-separated helper: who it runs as, that it dies with netbe, and that a
/// helper killed under traffic is reported and replaced while traffic resumes.
@Suite(.serialized) struct SlirpHelperTests {
    @Test func helperDropsRootAndDiesWithParent() throws {
        let net = try SlirpNetwork(helper: true)
        let helper = try #require(net.helperPID(), "no helper process under netbe \(net.netbe.pid)")
        let nobody = Int(try sh("id", "-u", "nobody").trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(processUID(helper) == nobody)
        #expect(processUID(net.netbe.pid) == 0)
        let cmdline = (try? String(contentsOfFile: "/proc/\(helper)/cmdline", encoding: .utf8)) ?? ""
        #expect(cmdline.contains("slirp-helper"))
        net.netbe.signal(SIGKILL)
        try waitUntil(5, "the helper \(helper) to die with its parent") { kill(helper, 0) != 0 }
    }

    @Test func killedHelperIsReportedAndRestartedWhileTrafficFlows() throws {
        let web = try LoopbackHTTPServer(bytes: 256 * 1024)
        let net = try SlirpNetwork(helper: true)
        try net.dhcp()
        let first = try #require(net.helperPID())
        // Traffic flowing: five pings a second to the gateway, answered by libslirp.
        let ping = try net.ns.spawn(["ping", "-i", "0.2", "-c", "200", "-W", "1", "10.0.2.2"])
        defer { _ = try? ping.stop(SIGINT) }
        func replies() -> Int { ping.stdout.split(separator: "\n").filter { $0.contains("bytes from") }.count }
        try waitUntil(5, "pings answered before the kill") { replies() >= 3 }
        kill(first, SIGKILL)
        try waitUntil(5, "netbe to report the dead helper") { net.netbe.stderr.contains("(pid \(first)) was killed by signal 9") }
        try waitUntil(5, "a new helper") { (net.helperPID() ?? first) != first }
        // The new pid shows at spawn; the log line follows the new helper's handshake.
        try waitUntil(5, "netbe to report the restart") { net.netbe.stderr.contains("slirp helper restarted") }
        #expect(net.netbe.isRunning)
        let afterKill = replies()
        try waitUntil(10, "pings answered again after the restart") { replies() >= afterKill + 5 }
        // TCP connections are new state in the new helper: a fetch works again.
        #expect(try net.fetch("http://10.0.2.2:\(web.port)/\(web.fileName)") == web.content)
        // The new helper was told the offloads again: the fetch (the only bulk transfer,
        // all after the restart) reached the tap as joined super-frames.
        _ = try net.netbe.stop()
        let counters = try NetbeBinary.counters(net.netbe.stdout)
        let down = try #require(counters.first { ($0["to"] as? String)?.hasSuffix("tap0") == true })
        #expect((down["gso_frames"] as? Int ?? 0) > 0, "the restarted helper sent no super-frame: \(down)")
    }
}
