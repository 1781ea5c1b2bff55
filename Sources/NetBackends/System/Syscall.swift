#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The result of a non-blocking I/O call: done with a count, or would block.
/// Would-block is a value, not an error, because on the hot path it is common.
public enum IOResult: Equatable, Sendable {
    case processed(Int)
    case wouldBlock
}

/// Thin wrappers: each retries EINTR, turns EAGAIN into `.wouldBlock`, and throws
/// any other errno as a `SystemCallError` naming the call and the device.
enum Syscall {
    @inline(__always)
    static func readv(_ fd: Int32, _ iov: UnsafePointer<iovec>, _ count: Int, device: String) throws(SystemCallError) -> IOResult {
        while true {
            let n = Glibc.readv(fd, iov, Int32(count))
            if n >= 0 { return .processed(n) }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN { return .wouldBlock }
            throw SystemCallError(call: "readv", device: device, errno: e)
        }
    }

    @inline(__always)
    static func read(_ fd: Int32, _ buf: UnsafeMutableRawPointer, _ count: Int, device: String) throws(SystemCallError) -> IOResult {
        while true {
            let n = Glibc.read(fd, buf, count)
            if n >= 0 { return .processed(n) }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN { return .wouldBlock }
            throw SystemCallError(call: "read", device: device, errno: e)
        }
    }

    @inline(__always)
    static func writev(_ fd: Int32, _ iov: UnsafePointer<iovec>, _ count: Int, device: String) throws(SystemCallError) -> IOResult {
        while true {
            let n = Glibc.writev(fd, iov, Int32(count))
            if n >= 0 { return .processed(n) }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == ENOBUFS { return .wouldBlock }
            throw SystemCallError(call: "writev", device: device, errno: e)
        }
    }

    @inline(__always)
    static func write(_ fd: Int32, _ buf: UnsafeRawPointer, _ count: Int, device: String) throws(SystemCallError) -> IOResult {
        while true {
            let n = Glibc.write(fd, buf, count)
            if n >= 0 { return .processed(n) }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == ENOBUFS { return .wouldBlock }
            throw SystemCallError(call: "write", device: device, errno: e)
        }
    }

    static func ioctl(_ fd: Int32, _ name: String, _ request: UInt, _ arg: UnsafeMutableRawPointer, device: String) throws(SystemCallError) {
        if cnb_ioctl_ptr(fd, request, arg) < 0 {
            throw SystemCallError(call: name, device: device, errno: errno)
        }
    }

    static func ioctl(_ fd: Int32, _ name: String, _ request: UInt, value: UInt, device: String) throws(SystemCallError) {
        if cnb_ioctl_ulong(fd, request, value) < 0 {
            throw SystemCallError(call: name, device: device, errno: errno)
        }
    }

    static func open(_ path: String, _ flags: Int32, device: String) throws(SystemCallError) -> Int32 {
        while true {
            let fd = Glibc.open(path, flags)
            if fd >= 0 { return fd }
            if errno == EINTR { continue }
            throw SystemCallError(call: "open \(path)", device: device, errno: errno)
        }
    }

    /// Runs a call that returns -1 with errno on failure.
    @discardableResult
    static func check(_ name: String, device: String, _ body: () -> Int32) throws(SystemCallError) -> Int32 {
        while true {
            let r = body()
            if r >= 0 { return r }
            if errno == EINTR { continue }
            throw SystemCallError(call: name, device: device, errno: errno)
        }
    }
}

import CNetBackends
