/// An owned, reusable buffer that holds any frame a backend can deliver (header
/// included): the safe API for tools and tests. Frontends holding guest memory use the
/// `iovec` API instead and copy nothing. Not thread-safe: use it from one thread.
public final class FrameBuffer: @unchecked Sendable {
    public static let defaultCapacity = maximumFrameLength + VirtioNetHeader.mergeableLength + 64

    public let capacity: Int
    /// Length of the frame last received (0 before any).
    public private(set) var count = 0
    let storage: UnsafeMutableRawPointer

    public init(capacity: Int = FrameBuffer.defaultCapacity) {
        self.capacity = capacity
        storage = .allocate(byteCount: capacity, alignment: 64)
    }

    deinit { storage.deallocate() }

    /// The frame's bytes, valid until the next receive into this buffer.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: storage, count: count) }

    /// A copy of the frame's bytes.
    public var array: [UInt8] { Array(bytes) }

    /// The virtio-net header in front of the frame, for a backend whose header length is `length`.
    public func header(length: Int) -> VirtioNetHeader? {
        guard length > 0, count >= length else { return nil }
        return VirtioNetHeader(decoding: UnsafeRawBufferPointer(start: storage, count: length))
    }

    /// The frame without its `length`-byte header.
    public func payload(afterHeader length: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: storage + min(length, count), count: max(0, count - length))
    }

    func setCount(_ n: Int) { count = n }
}

extension NetBackend {
    /// Receives one frame into `buffer` (its `count` becomes the frame's length).
    public func receive(into buffer: FrameBuffer) throws(NetBackendError) -> ReceiveResult {
        let r = try receive(into: UnsafeMutableRawBufferPointer(start: buffer.storage, count: buffer.capacity))
        buffer.setCount(0)
        if case .frame(let n) = r { buffer.setCount(n) }
        return r
    }

    /// Sends a frame held in an array (header included when `vnetHeaderLength` is not 0).
    public func send(_ frame: [UInt8]) throws(NetBackendError) -> SendResult {
        // withUnsafeBytes rethrows untyped errors: carry the typed one out in a Result.
        let result = frame.withUnsafeBytes { raw in
            Result { () throws(NetBackendError) -> SendResult in try send(raw, more: false) }
        }
        return try result.get()
    }
}
