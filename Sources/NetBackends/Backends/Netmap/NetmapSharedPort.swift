/// A port whose netmap-format rings live in memory shared with a peer process that plays
/// the kernel's side (a switch): the memory laid out by `NetmapRingFormatter`, TX and RX
/// rings used from the user side, and two eventfds — `kick` written after we publish
/// (frames sent, slots handed back), `wake` written by the peer after it does.
final class NetmapSharedPort: NetmapPortDriver {
    let memory: SharedRingMemory
    let kick: RingKick
    let wake: RingKick
    let transmit: [NetmapRingSender]
    let receive: [NetmapRingReceiver]
    let headerLengths: [Int]
    var fd: Int32 { wake.fd }
    var signalsRoomOnRead: Bool { true }

    /// `headerLength`: what the two sides agreed the frames carry (0, 10 or 12).
    init(memory: SharedRingMemory, kick: RingKick, wake: RingKick, headerLength: Int) throws(NetBackendError) {
        let layout: NetmapInterfaceLayout
        do { layout = try memory.memory.interface(at: 0) } catch {
            throw .invalidArgument("shared ring memory: \(error)")
        }
        guard !layout.transmit.isEmpty, !layout.receive.isEmpty else {
            throw .invalidArgument("shared ring memory has \(layout.transmit.count) TX and \(layout.receive.count) RX rings")
        }
        self.memory = memory
        self.kick = kick
        self.wake = wake
        transmit = layout.transmit.map { NetmapRingSender($0) }
        receive = layout.receive.map { NetmapRingReceiver($0) }
        headerLengths = [headerLength]
    }

    func setHeaderLength(_ length: Int) throws(NetBackendError) {
        guard headerLengths.contains(length) else {
            throw .invalidArgument("shared ring port: header length \(length) is not the agreed \(headerLengths[0])")
        }
    }

    func transmitSync() throws(NetBackendError) {
        do { try kick.signal() } catch { throw .system(error) }
    }

    func receiveSync() throws(NetBackendError) {
        // Reset our eventfd first, then tell the peer about the slots handed back; the
        // caller looks at the rings after this, so a kick in between is never lost.
        wake.consume()
        do { try kick.signal() } catch { throw .system(error) }
    }

    func rearm() { try? wake.signal() }

    func acknowledge() { wake.consume() }

    func close() {
        kick.close()
        wake.close()
    }
}
