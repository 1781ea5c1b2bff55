import Foundation

/// A DHCP lease inside a test namespace from busybox udhcpc: its script sets the address
/// and default route and prints `lease IP/MASK router ROUTER dns DNS`.
struct DhcpLease {
    let address: String
    let router: String?
    let line: String

    static let script = """
    #!/bin/sh
    case "$1" in
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        [ -z "$router" ] || ip route add default via "${router%% *}" dev "$interface"
        echo "lease $ip/${mask:-24} router ${router%% *} dns $dns" ;;
    esac
    exit 0
    """

    /// Runs udhcpc on `ifname` in `ns` (bounded by timeout(1)); throws when no lease came.
    static func obtain(in ns: TestNamespace, on ifname: String = "tap0", seconds: Int = 20) throws -> DhcpLease {
        try requireTool("busybox", package: "busybox-static")
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("nbt-udhcpc-\(getpid())-\(UUID().uuidString.prefix(6)).sh").path
        try script.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        try sh("chmod", "755", path)
        let out = try ns.run("timeout", String(seconds), "busybox", "udhcpc", "-i", ifname, "-n", "-q", "-t", "5", "-T", "1", "-s", path)
        guard let line = out.split(separator: "\n").first(where: { $0.hasPrefix("lease ") }) else {
            throw TestFailure("udhcpc printed no lease: \(out)")
        }
        let words = line.split(separator: " ").map(String.init)
        let router = words.count > 3 && !words[3].isEmpty && words[2] == "router" ? words[3] : nil
        return DhcpLease(address: words[1], router: router, line: String(line))
    }
}
