extension String {
    /// The text of a NUL-terminated C character buffer (what ioctl, inet_ntop and
    /// getnameinfo fill in), up to its first NUL.
    init(nulTerminated buffer: [CChar]) {
        self.init(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
