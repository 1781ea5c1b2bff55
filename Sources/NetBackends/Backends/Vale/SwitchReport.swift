/// The `ports` reply: every switch's ports, their learned MACs and counters, as JSON
/// (written by hand: the library does not use Foundation; names are validated words).
public enum SwitchReport {
    public static func json(_ switches: [NetSwitch]) -> String {
        let now = NetSwitch.now()
        let list = switches.map { sw -> String in
            let ports = sw.ports.map { p -> String in
                let drops = p.dropsByReason.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",")
                let macs = sw.table.addresses(port: p.index, now: now).map { "\"\($0)\"" }.joined(separator: ",")
                let faults = (p.backend as? SwitchRingPort).map { ",\"peer_faults\":\($0.faults.invalidIndex &+ $0.faults.invalidSlot)" } ?? ""
                return "{\"name\":\"\(p.name)\",\"kind\":\"\(p.backend.kind)\",\"macs\":[\(macs)],"
                    + "\"rx_frames\":\(p.received.frames),\"rx_bytes\":\(p.received.bytes),"
                    + "\"frames\":\(p.sent.frames),\"bytes\":\(p.sent.bytes),\"gso_frames\":\(p.sent.gsoFrames),"
                    + "\"sw_segmented\":\(p.sent.softwareSegmented &+ p.backend.statistics.softwareSegmented),"
                    + "\"filtered\":\(p.filtered)\(faults),\"drops\":{\(drops)}}"
            }
            return "{\"name\":\"\(sw.name)\",\"ports\":[\(ports.joined(separator: ","))]}"
        }
        return "{\"switches\":[\(list.joined(separator: ","))]}"
    }
}
