import ArgumentParser
import Foundation
import NetBackends

/// `netbe ports [SWITCH] [--json]`: asks the running `netbe switch` for its ports, their
/// learned MACs and counters.
struct PortsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ports",
        abstract: "List the ports of the running switch daemon, their MACs and counters."
    )

    @Argument(help: "Only this switch")
    var switchName: String?
    @Flag(name: .long, help: "Print the daemon's JSON.")
    var json = false
    @Option(name: .long, help: "The control socket (default as `netbe switch`).")
    var socket: String?

    func run() throws {
        let path = try socket ?? SwitchControl.defaultSocketPath()
        let fd: Int32
        do { fd = try SwitchControl.connectForRequests(path) } catch {
            throw NetBackendError.deviceGone("no switch daemon at \(path): \(error)")
        }
        defer { close(fd) }
        let reply = try SwitchControl.request(fd, "ports" + (switchName.map { " " + $0 } ?? ""), device: path)
        let body = String(reply.body.dropFirst(3))
        if json {
            print(body)
            return
        }
        guard let o = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
              let switches = o["switches"] as? [[String: Any]] else {
            throw NetBackendError.deviceGone("the daemon's reply is not the expected JSON")
        }
        print("SWITCH:PORT".padding(toLength: 24, withPad: " ", startingAt: 0) + "KIND    RX-FRAMES  TX-FRAMES  DROPS  MACS")
        for sw in switches {
            let name = sw["name"] as? String ?? "?"
            for p in sw["ports"] as? [[String: Any]] ?? [] {
                func n(_ k: String) -> UInt64 { (p[k] as? NSNumber)?.uint64Value ?? 0 }
                let drops = ((p["drops"] as? [String: Any]) ?? [:]).values.reduce(UInt64(0)) { $0 + (($1 as? NSNumber)?.uint64Value ?? 0) }
                let macs = (p["macs"] as? [String] ?? []).joined(separator: ",")
                let id = "\(name):\(p["name"] as? String ?? "?")"
                print(id.padding(toLength: 24, withPad: " ", startingAt: 0)
                      + (p["kind"] as? String ?? "?").padding(toLength: 8, withPad: " ", startingAt: 0)
                      + String(n("rx_frames")).padding(toLength: 11, withPad: " ", startingAt: 0)
                      + String(n("frames")).padding(toLength: 11, withPad: " ", startingAt: 0)
                      + String(drops).padding(toLength: 7, withPad: " ", startingAt: 0) + macs)
            }
        }
    }
}
