// The vhost-user protocol's numbers, from QEMU's docs/interop/vhost-user.rst: a message is
// a 12-byte header (request, flags, payload size; native endian, as both ends share a
// host) and a payload; descriptors travel as SCM_RIGHTS ancillary data.

enum VhostUserRequest: UInt32 {
    case getFeatures = 1
    case setFeatures = 2
    case setOwner = 3
    case resetOwner = 4
    case setMemTable = 5
    case setLogBase = 6
    case setLogFD = 7
    case setVringNum = 8
    case setVringAddr = 9
    case setVringBase = 10
    case getVringBase = 11
    case setVringKick = 12
    case setVringCall = 13
    case setVringErr = 14
    case getProtocolFeatures = 15
    case setProtocolFeatures = 16
    case getQueueNum = 17
    case setVringEnable = 18
}

enum VhostUserMessage {
    static let headerLength = 12
    /// Payloads this server reads are at most a memory table of 8 regions (8 + 8 * 32 bytes);
    /// anything longer is refused before it is read.
    static let maximumPayload = 8 + maximumRegions * 32
    static let maximumRegions = 8
    /// Flags: the version in bits 0-1 (1), REPLY (bit 2), NEED_REPLY (bit 3).
    static let version: UInt32 = 1
    static let versionMask: UInt32 = 3
    static let replyFlag: UInt32 = 1 << 2
    static let needReplyFlag: UInt32 = 1 << 3
    /// SET_VRING_KICK/CALL/ERR payload: bits 0-7 the queue, bit 8 "no descriptor" (polling).
    static let noDescriptorFlag: UInt64 = 1 << 8
}

/// Device feature bits beyond virtio-net's own (virtio 1.2, 6 "Reserved Feature Bits").
enum VirtioRingFeature {
    static let indirectDescriptors: UInt64 = 1 << 28   // VIRTIO_RING_F_INDIRECT_DESC
    static let eventIndex: UInt64 = 1 << 29            // VIRTIO_RING_F_EVENT_IDX
    static let protocolFeatures: UInt64 = 1 << 30      // VHOST_USER_F_PROTOCOL_FEATURES
    static let version1: UInt64 = 1 << 32              // VIRTIO_F_VERSION_1
    static let inOrder: UInt64 = 1 << 35               // VIRTIO_F_IN_ORDER
    static let logAll: UInt64 = 1 << 26                // VHOST_F_LOG_ALL: never offered (no migration)
}

/// VHOST_USER_PROTOCOL_F_* bits.
enum VhostUserProtocolFeature {
    static let replyAck: UInt64 = 1 << 3
}

extension VirtioRingFeature {
    /// Feature bits by their spec names (ring and transport bits, then virtio-net's), for logs.
    static func describe(_ bits: UInt64) -> String {
        let ring: [(UInt64, String)] = [(indirectDescriptors, "INDIRECT_DESC"), (eventIndex, "EVENT_IDX"),
                                        (protocolFeatures, "PROTOCOL_FEATURES"), (inOrder, "IN_ORDER")]
        var rest = bits
        var names: [String] = []
        for (bit, name) in ring where bits & bit != 0 {
            names.append(name)
            rest &= ~bit
        }
        return (VirtioNetFeatures(rawValue: rest).names + names).joined(separator: ",")
    }
}
