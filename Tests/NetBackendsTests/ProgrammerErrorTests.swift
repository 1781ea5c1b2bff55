import CNetBackends
import Foundation
import NetBackends
import Testing

/// Programmer errors are not frame drops: a buffer the kernel cannot read (EFAULT) is a
/// bug in the caller, and netbe stops with a message naming the call rather than counting
/// a drop and going on; an empty iovec list is refused with a message, not a force-unwrap.
/// Each runs in a child process (an exit test), which must die, saying why.
@Suite struct ProgrammerErrorTests {
    /// A stream backend connected to a listening unix socket made here, in the child.
    static func connectedStream() throws -> NetBackend {
        let path = "/tmp/nbt\(getpid())-efault.sock"
        unlink(path)
        let listener = socket(AF_UNIX, cnb_SOCK_STREAM, 0)
        var a = sockaddr_un()
        a.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &a.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        _ = withUnsafePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        listen(listener, 1)
        return try BackendRegistry.shared.open("stream,connect=unix:\(path)", on: try NetEventLoop())
    }

    @Test func efaultFromASendTrapsNamingTheCall() async throws {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let s = try ProgrammerErrorTests.connectedStream()
            var iov = iovec(iov_base: UnsafeMutableRawPointer(bitPattern: 0x1000), iov_len: 100)
            // Neither a drop nor an error (a lost peer) may come back: only a trap is right.
            _ = try? withUnsafePointer(to: &iov) { try s.send(UnsafeBufferPointer(start: $0, count: 1), more: false) }
            exit(0)
        }
        let text = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(text.contains("sendmsg") && text.contains("Bad address"), "stderr: \(text)")
    }

    @Test func emptyIOVectorListIsRefusedWithAMessage() async throws {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let s = try ProgrammerErrorTests.connectedStream()
            _ = try s.send(UnsafeBufferPointer<iovec>(start: nil, count: 0), more: false)
            exit(0)
        }
        let text = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(text.contains("empty iovec list"), "stderr: \(text)")
    }
}
