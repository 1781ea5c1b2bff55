/// A switch's learned addresses: MAC -> port, bounded, with aging.
///
/// Set-associative: a MAC hashes to one bucket of `ways` entries, so a lookup or an
/// update touches one cache line or two and the table never grows. An entry unseen for
/// `agingSeconds` is as good as empty and is taken over by the next MAC that needs room.
/// When a bucket is full of live entries the MAC is not learned (counted in `full`): its
/// frames are flooded, as an unknown destination's are. One allocation, made at init.
/// Loop thread only.
public final class MACTable: @unchecked Sendable {
    static let ways = 4
    /// A MAC is 48 bits; 0 marks an empty entry (the all-zero MAC is never learned).
    private let macs: UnsafeMutablePointer<UInt64>
    private let ports: UnsafeMutablePointer<Int32>
    private let seen: UnsafeMutablePointer<UInt32>
    private let bucketMask: Int
    public let capacity: Int
    public let agingSeconds: UInt32
    /// MACs not learned because their bucket was full of live entries.
    @exclusivity(unchecked) public private(set) var full: UInt64 = 0
    /// Learned MACs seen again behind another port (a VM moved, a loop, a spoof).
    @exclusivity(unchecked) public private(set) var moves: UInt64 = 0

    /// Room for at least `capacity` MACs (rounded up to a power-of-two number of buckets).
    public init(capacity: Int = 4096, agingSeconds: UInt32 = 300) {
        var buckets = 1
        while buckets * Self.ways < capacity { buckets <<= 1 }
        bucketMask = buckets - 1
        self.capacity = buckets * Self.ways
        self.agingSeconds = agingSeconds
        macs = .allocate(capacity: self.capacity)
        macs.initialize(repeating: 0, count: self.capacity)
        ports = .allocate(capacity: self.capacity)
        ports.initialize(repeating: -1, count: self.capacity)
        seen = .allocate(capacity: self.capacity)
        seen.initialize(repeating: 0, count: self.capacity)
    }

    deinit {
        macs.deallocate()
        ports.deallocate()
        seen.deallocate()
    }

    /// The 48-bit MAC at `p` as an integer (byte order kept: only equality matters).
    @inline(__always)
    static func key(_ p: UnsafeRawPointer) -> UInt64 {
        UInt64(p.loadUnaligned(as: UInt32.self)) | UInt64(p.loadUnaligned(fromByteOffset: 4, as: UInt16.self)) << 32
    }

    /// Group bit (multicast or broadcast): the first byte's lowest bit.
    @inline(__always)
    static func isGroup(_ key: UInt64) -> Bool { key & 1 != 0 }

    @inline(__always)
    private func bucket(_ key: UInt64) -> Int {
        // Fibonacci hashing of the 48 bits; the top bits pick the bucket.
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 40) & bucketMask &* Self.ways
    }

    @inline(__always)
    private func live(_ i: Int, _ now: UInt32) -> Bool { macs[i] != 0 && now &- seen[i] < agingSeconds }

    /// The port `key` was learned on, -1 when unknown or aged out.
    @inline(__always)
    public func lookup(_ key: UInt64, now: UInt32) -> Int32 {
        let b = bucket(key)
        for i in b..<(b + Self.ways) where macs[i] == key {
            return now &- seen[i] < agingSeconds ? ports[i] : -1
        }
        return -1
    }

    /// Records `key` behind `port` at `now` (a unicast source address); false when its
    /// bucket had no room.
    @inline(__always)
    @discardableResult
    public func learn(_ key: UInt64, port: Int32, now: UInt32) -> Bool {
        guard key != 0, !Self.isGroup(key) else { return false }
        let b = bucket(key)
        var free = -1
        for i in b..<(b + Self.ways) {
            if macs[i] == key {
                if ports[i] != port {
                    if now &- seen[i] < agingSeconds { moves &+= 1 }
                    ports[i] = port
                }
                seen[i] = now
                return true
            }
            if free < 0 && !live(i, now) { free = i }
        }
        guard free >= 0 else { full &+= 1; return false }
        macs[free] = key
        ports[free] = port
        seen[free] = now
        return true
    }

    /// Forgets every MAC learned on `port` (the port went away).
    public func forget(port: Int32) {
        for i in 0..<capacity where ports[i] == port {
            macs[i] = 0
            ports[i] = -1
        }
    }

    /// The live MACs learned on `port`, as text (for `netbe ports`).
    public func addresses(port: Int32, now: UInt32) -> [String] {
        var out: [String] = []
        for i in 0..<capacity where ports[i] == port && live(i, now) {
            let k = macs[i]
            out.append((0..<6).map { String(format2((k >> (8 * UInt64($0))) & 0xff)) }.joined(separator: ":"))
        }
        return out.sorted()
    }

    /// Live entries now.
    public func count(now: UInt32) -> Int { (0..<capacity).reduce(0) { live($1, now) ? $0 + 1 : $0 } }
}

/// Two lowercase hex digits.
private func format2(_ v: UInt64) -> String {
    let digits = Array("0123456789abcdef")
    return String([digits[Int(v >> 4)], digits[Int(v & 15)]])
}
