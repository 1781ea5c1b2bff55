import NetBackends
import Testing

/// virtio-net header layout and feature bits against OASIS virtio v1.2: 5.1.3 (feature
/// bits), 5.1.6 (struct virtio_net_hdr, little-endian fields), and the offload
/// negotiation a relay does on top of them.
@Suite struct VirtioNetTests {
    // MARK: header

    private func encode(_ h: VirtioNetHeader, length: Int) -> [UInt8] {
        var raw = [UInt8](repeating: 0xee, count: length)
        raw.withUnsafeMutableBytes { h.encode(into: $0) }
        return raw
    }

    private func decode(_ raw: [UInt8]) -> VirtioNetHeader? {
        raw.withUnsafeBytes { VirtioNetHeader(decoding: $0) }
    }

    private let sample = VirtioNetHeader(flags: [.needsCsum], gsoType: .tcpv4, ecn: true, headerLength: 0x0142,
                                         gsoSize: 0x05a8, csumStart: 0x0022, csumOffset: 0x0010, numBuffers: 0x0203)

    @Test func encodesTenBytesLittleEndian() {
        // flags, gso_type|ECN, hdr_len, gso_size, csum_start, csum_offset (5.1.6)
        #expect(encode(sample, length: 10) == [0x01, 0x81, 0x42, 0x01, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00])
    }

    @Test func encodesTwelveBytesWithNumBuffers() {
        #expect(encode(sample, length: 12) == [0x01, 0x81, 0x42, 0x01, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00, 0x03, 0x02])
    }

    @Test func decodesWhatItEncodes() throws {
        let twelve = try #require(decode(encode(sample, length: 12)))
        #expect(twelve == sample)
        // The 10-byte form has no num_buffers: it reads back as 0.
        let ten = try #require(decode(encode(sample, length: 10)))
        var expected = sample
        expected.numBuffers = 0
        #expect(ten == expected)
    }

    @Test func decodesSpecValues() throws {
        // GSO_TCPV6 (4) without ECN, DATA_VALID (2), num_buffers 1.
        let h = try #require(decode([0x02, 0x04, 0x36, 0x00, 0x40, 0x05, 0x36, 0x00, 0x10, 0x00, 0x01, 0x00]))
        #expect(h.flags == [.dataValid])
        #expect(h.gsoType == .tcpv6)
        #expect(!h.ecn)
        #expect(h.isGSO)
        #expect(h.headerLength == 0x36 && h.gsoSize == 1344 && h.csumStart == 0x36 && h.csumOffset == 16)
        #expect(h.numBuffers == 1)
        // ECN bit alone on a non-GSO type, and UDP_L4 (5).
        #expect(decode([0, 0x85, 0, 0, 0, 0, 0, 0, 0, 0])?.gsoType == .udpL4)
        #expect(decode([0, 0x85, 0, 0, 0, 0, 0, 0, 0, 0])?.ecn == true)
        #expect(decode([0, 0, 0, 0, 0, 0, 0, 0, 0, 0])?.isGSO == false)
    }

    @Test func rejectsUnknownGSOTypeAndShortInput() {
        #expect(decode([0, 2, 0, 0, 0, 0, 0, 0, 0, 0]) == nil)      // 2 is not a GSO type
        #expect(decode([0, 0x82, 0, 0, 0, 0, 0, 0, 0, 0]) == nil)
        #expect(decode([0, 0, 0, 0, 0, 0, 0, 0, 0]) == nil)         // 9 bytes
    }

    @Test func constantsMatchTheSpec() {
        #expect(VirtioNetHeader.validLengths == [0, 10, 12])
        #expect(VirtioNetHeader.baseLength == 10)
        #expect(VirtioNetHeader.mergeableLength == 12)
        #expect(VirtioNetHeader.Flags.needsCsum.rawValue == 1)
        #expect(VirtioNetHeader.Flags.dataValid.rawValue == 2)
        #expect(VirtioNetHeader.Flags.rscInfo.rawValue == 4)
        #expect(VirtioNetHeader.gsoECN == 0x80)
        #expect(VirtioNetHeader.GSOType.tcpv4.rawValue == 1)
        #expect(VirtioNetHeader.GSOType.udp.rawValue == 3)
        #expect(VirtioNetHeader.GSOType.tcpv6.rawValue == 4)
        #expect(VirtioNetHeader.GSOType.udpL4.rawValue == 5)
    }

    // MARK: feature bits

    @Test(arguments: [
        (VirtioNetFeatures.csum, 0), (.guestCsum, 1), (.ctrlGuestOffloads, 2), (.mtu, 3), (.mac, 5),
        (.guestTSO4, 7), (.guestTSO6, 8), (.guestECN, 9), (.guestUFO, 10), (.hostTSO4, 11), (.hostTSO6, 12),
        (.hostECN, 13), (.hostUFO, 14), (.mrgRxbuf, 15), (.status, 16), (.ctrlVQ, 17), (.ctrlRx, 18),
        (.ctrlVlan, 19), (.guestAnnounce, 21), (.mq, 22), (.ctrlMacAddr, 23), (.version1, 32),
        (.guestUSO4, 54), (.guestUSO6, 55), (.hostUSO, 56),
    ])
    func featureBitMatchesSpecNumber(feature: VirtioNetFeatures, bit: Int) {
        #expect(feature.rawValue == UInt64(1) << UInt64(bit))
    }

    @Test func namesFollowTheSpec() {
        #expect(VirtioNetFeatures([.csum, .mrgRxbuf, .version1]).description == "CSUM,MRG_RXBUF,VERSION_1")
        #expect(VirtioNetFeatures([]).description == "none")
        #expect(VirtioNetFeatures(rawValue: 1 << 4 | 1 << 60).names == ["BIT4", "BIT60"])
        #expect(VirtioNetFeatures([.hostUSO, .guestUSO4]).names == ["GUEST_USO4", "HOST_USO"])
    }

    @Test func offloadGroupsAreEachOthersMirror() {
        #expect(VirtioNetFeatures.hostOffloads.mirrored == .guestOffloads)
        #expect(VirtioNetFeatures.guestOffloads.mirrored == .hostOffloads)
    }

    @Test func mirroredSwapsDirections() {
        #expect(VirtioNetFeatures([.csum, .hostTSO4]).mirrored == [.guestCsum, .guestTSO4])
        #expect(VirtioNetFeatures([.guestTSO6, .guestECN, .guestUFO]).mirrored == [.hostTSO6, .hostECN, .hostUFO])
        // HOST_USO stands for both UDP segmentation directions of the peer...
        #expect(VirtioNetFeatures.hostUSO.mirrored == [.guestUSO4, .guestUSO6])
        // ...so it is only offered back when the peer takes both.
        #expect(VirtioNetFeatures.guestUSO4.mirrored == [])
        #expect(VirtioNetFeatures([.guestUSO4, .guestUSO6]).mirrored == .hostUSO)
        // Non-offload bits do not cross.
        #expect(VirtioNetFeatures([.mrgRxbuf, .version1, .mac]).mirrored == [])
    }

    @Test func withPrerequisitesDropsOrphans() {
        // TSO/UFO/USO need their direction's checksum offload; ECN needs a TSO (5.1.3.1).
        #expect(VirtioNetFeatures([.guestTSO4, .guestTSO6, .guestUFO, .guestUSO4, .guestECN]).withPrerequisites == [])
        #expect(VirtioNetFeatures([.hostTSO4, .hostUSO, .hostECN]).withPrerequisites == [])
        #expect(VirtioNetFeatures([.guestCsum, .guestECN]).withPrerequisites == [.guestCsum])
        #expect(VirtioNetFeatures([.csum, .hostUFO, .hostECN]).withPrerequisites == [.csum, .hostUFO])
        let full: VirtioNetFeatures = [.csum, .hostTSO4, .hostECN, .guestCsum, .guestTSO6, .guestECN, .mrgRxbuf]
        #expect(full.withPrerequisites == full)
    }

    @Test func negotiationHandsEachSideOnlyWhatThePeerSends() {
        let tap: VirtioNetFeatures = VirtioNetFeatures.guestOffloads.union(.hostOffloads).union(.mrgRxbuf)
        // Two full sides: every offload, but never non-offload bits like MRG_RXBUF.
        #expect(Negotiation.features(for: tap, peer: tap) == VirtioNetFeatures.guestOffloads.union(.hostOffloads))
        // A peer without offloads: nothing, in either direction.
        #expect(Negotiation.features(for: tap, peer: []) == [])
        #expect(Negotiation.features(for: tap, peer: [.mrgRxbuf]) == [])
        // A peer that accepts checksum and TSO4 on send may be handed those; nothing else.
        #expect(Negotiation.features(for: tap, peer: [.csum, .hostTSO4]) == [.guestCsum, .guestTSO4])
        // A peer sending TSO6 without csum would be a broken peer: prerequisites remove it.
        #expect(Negotiation.features(for: tap, peer: [.hostTSO6]) == [])
        // Symmetric: what the peer may receive becomes what this side may send.
        #expect(Negotiation.features(for: tap, peer: [.guestCsum, .guestTSO4, .guestTSO6]) == [.csum, .hostTSO4, .hostTSO6])
        // A side never gets what it does not offer itself.
        #expect(Negotiation.features(for: [.guestCsum], peer: tap) == [.guestCsum])
    }

    @Test func softwareGrantsOnlyWhatTheRelayCanDoItself() {
        let tap: VirtioNetFeatures = VirtioNetFeatures.guestOffloads.union(.hostOffloads).union(.mrgRxbuf)
        // A plain peer: the side may hand out partial checksums and TCP GSO (the relay
        // finishes and cuts them) and be handed TCP GSO (the relay joins the peer's
        // segments); never UDP GSO or ECN.
        #expect(Negotiation.features(for: tap, peer: [], software: true)
                == [.guestCsum, .guestTSO4, .guestTSO6, .csum, .hostTSO4, .hostTSO6])
        // A peer that takes and gives UFO itself: that too, from the peer.
        #expect(Negotiation.features(for: tap, peer: [.csum, .hostTSO4, .hostUFO, .guestUFO], software: true)
                == [.guestCsum, .guestTSO4, .guestTSO6, .guestUFO, .csum, .hostTSO4, .hostTSO6, .hostUFO])
        // A side that offers nothing gets nothing.
        #expect(Negotiation.features(for: [.mrgRxbuf], peer: [], software: true) == [])
    }

    // MARK: setCapabilities on a real tap

    @Test func setCapabilitiesAcceptsOnlyZeroTenTwelve() throws {
        let ns = try TestNamespace("cap")
        let loop = try NetEventLoop()
        let tap = try BackendRegistry.shared.open("tap0,netns=\(ns.name)", on: loop)
        defer { tap.close() }
        for bad in [1, 8, 11, 13, 14, 16, -1] {
            #expect(throws: NetBackendError.self, "header length \(bad)") {
                try tap.setCapabilities([], vnetHeaderLength: bad)
            }
        }
        for good in [12, 10, 0, 12] {
            try tap.setCapabilities([], vnetHeaderLength: good)
            #expect(tap.vnetHeaderLength == good)
            #expect(tap.frontendHeaderLength == good)
        }
        #expect(tap.supportedHeaderLengths == [0, 10, 12])
        #expect(tap.preferredHeaderLength == 12)
    }

    @Test func setCapabilitiesRejectsFeaturesNotOffered() throws {
        let ns = try TestNamespace("cap")
        let loop = try NetEventLoop()
        let full = try BackendRegistry.shared.open("tap0,netns=\(ns.name)", on: loop)
        defer { full.close() }
        // This kernel's tap offers checksum and TSO both ways (linux/if_tun.h TUN_F_*).
        let caps = full.capabilities
        #expect(caps.isSuperset(of: [.csum, .guestCsum, .hostTSO4, .guestTSO4, .hostTSO6, .guestTSO6, .mrgRxbuf]), "\(caps)")
        try full.setCapabilities(caps, vnetHeaderLength: 12)
        #expect(full.negotiatedFeatures == caps)
        #expect(throws: NetBackendError.self) { try full.setCapabilities([.ctrlVQ], vnetHeaderLength: 12) }
        // A failed call changes nothing.
        #expect(full.negotiatedFeatures == caps)

        let noOffload = try BackendRegistry.shared.open("tap1,netns=\(ns.name),offload=off", on: loop)
        defer { noOffload.close() }
        #expect(noOffload.capabilities == [.mrgRxbuf])
        #expect(throws: NetBackendError.self) { try noOffload.setCapabilities([.guestCsum], vnetHeaderLength: 12) }
        try noOffload.setCapabilities([.mrgRxbuf], vnetHeaderLength: 12)

        // Without a header on the fd the backend offers nothing and carries no header:
        // the frontend's 12 bytes are its own business (backend length 0).
        let plain = try BackendRegistry.shared.open("tap2,netns=\(ns.name),vnet=off", on: loop)
        defer { plain.close() }
        #expect(plain.capabilities == [])
        #expect(plain.supportedHeaderLengths == [0])
        #expect(throws: NetBackendError.self) { try plain.setCapabilities([.mrgRxbuf], vnetHeaderLength: 12) }
        try plain.setCapabilities([], vnetHeaderLength: 12)
        #expect(plain.vnetHeaderLength == 0)
        #expect(plain.frontendHeaderLength == 12)
    }
}
