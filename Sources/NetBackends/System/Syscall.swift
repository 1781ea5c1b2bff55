import CNetBackends
import SystemPackage
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

/// The one way this package makes a system call (`run` and `check`); every wrapper
/// below, and every backend's raw call, goes through them. A call:
/// - is made again on EINTR;
/// - returns EAGAIN as `.wouldBlock` (and ENOBUFS, for sends and writes, where a full
///   queue is back-pressure, not a failure);
/// - reads errno right after the call, before anything else can change it;
/// - traps on EFAULT and EBADF, naming the call: a buffer that is not there or a
///   descriptor already closed is a bug in the caller, never a frame to count as dropped
///   (swift-nio's NIOPosix/System.swift does the same);
/// - throws anything else as a `SystemCallError` naming the call, the device and errno.
/// The call and device names are closures: on the hot path nothing is formatted unless
/// the call fails.
enum Syscall {
    @inline(__always)
    static func run(_ call: @autoclosure () -> String, device: @autoclosure () -> String, noBuffersBlock: Bool = false,
                    _ body: () -> Int) throws(SystemCallError) -> IOResult {
        while true {
            let n = body()
            if n >= 0 { return .processed(n) }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || (noBuffersBlock && e == ENOBUFS) { return .wouldBlock }
            if e == EFAULT || e == EBADF { callerBug(call(), device(), e) }
            throw SystemCallError(call: call(), device: device(), errno: e)
        }
    }

    /// `run` for calls where would-block cannot happen or is itself a failure (set-up
    /// calls, blocking descriptors): EAGAIN is thrown like any other errno.
    @inline(__always)
    @discardableResult
    static func check(_ call: @autoclosure () -> String, device: @autoclosure () -> String,
                      _ body: () -> Int32) throws(SystemCallError) -> Int32 {
        while true {
            let r = body()
            if r >= 0 { return r }
            let e = errno
            if e == EINTR { continue }
            if e == EFAULT || e == EBADF { callerBug(call(), device(), e) }
            throw SystemCallError(call: call(), device: device(), errno: e)
        }
    }

    @inline(never)
    static func callerBug(_ call: String, _ device: String, _ e: Int32) -> Never {
        // fatalError, not preconditionFailure: the message is printed in release builds too.
        fatalError("\(call) on \(device): \(Errno(rawValue: e)) (errno \(e)): a bug in the caller, not a failure of the device")
    }

    // MARK: descriptors

    @inline(__always)
    static func readv(_ fd: Int32, _ iov: UnsafePointer<iovec>, _ count: Int, device: @autoclosure () -> String) throws(SystemCallError) -> IOResult {
        precondition(count > 0, "readv: an empty iovec list")
        return try run("readv", device: device()) { Glibc.readv(fd, iov, Int32(count)) }
    }

    @inline(__always)
    static func read(_ fd: Int32, _ buf: UnsafeMutableRawPointer?, _ count: Int, device: @autoclosure () -> String) throws(SystemCallError) -> IOResult {
        try run("read", device: device()) { Glibc.read(fd, buf, count) }
    }

    @inline(__always)
    static func writev(_ fd: Int32, _ iov: UnsafePointer<iovec>, _ count: Int, device: @autoclosure () -> String) throws(SystemCallError) -> IOResult {
        precondition(count > 0, "writev: an empty iovec list")
        return try run("writev", device: device(), noBuffersBlock: true) { Glibc.writev(fd, iov, Int32(count)) }
    }

    @inline(__always)
    static func write(_ fd: Int32, _ buf: UnsafeRawPointer?, _ count: Int, device: @autoclosure () -> String) throws(SystemCallError) -> IOResult {
        try run("write", device: device(), noBuffersBlock: true) { Glibc.write(fd, buf, count) }
    }

    static func ioctl(_ fd: Int32, _ name: String, _ request: UInt, _ arg: UnsafeMutableRawPointer, device: String) throws(SystemCallError) {
        try check(name, device: device) { cnb_ioctl_ptr(fd, request, arg) }
    }

    static func ioctl(_ fd: Int32, _ name: String, _ request: UInt, value: UInt, device: String) throws(SystemCallError) {
        try check(name, device: device) { cnb_ioctl_ulong(fd, request, value) }
    }

    /// Waits up to `milliseconds` for `events` on `fd`: true if any came (or the descriptor
    /// hung up), false on timeout.
    static func poll(_ fd: Int32, _ events: Int32, milliseconds: Int32, device: @autoclosure () -> String) throws(SystemCallError) -> Bool {
        var p = pollfd(fd: fd, events: Int16(events), revents: 0)
        return try check("poll", device: device()) { Glibc.poll(&p, 1, milliseconds) } > 0
    }

    static func open(_ path: String, _ flags: Int32, device: String) throws(SystemCallError) -> Int32 {
        try check("open \(path)", device: device) { Glibc.open(path, flags) }
    }

    // MARK: sockets

    /// send(2); `.wouldBlock` when the socket is full (EAGAIN, ENOBUFS).
    @inline(__always)
    static func send(_ fd: Int32, _ buf: UnsafeRawPointer?, _ count: Int, flags: Int32, device: @autoclosure () -> String) throws(SystemCallError) -> IOResult {
        try run("send", device: device(), noBuffersBlock: true) { Glibc.send(fd, buf, count, flags) }
    }

    /// recv(2); `.wouldBlock` when nothing waits.
    @inline(__always)
    static func recv(_ fd: Int32, _ buf: UnsafeMutableRawPointer?, _ count: Int, flags: Int32, device: @autoclosure () -> String) throws(SystemCallError) -> IOResult {
        try run("recv", device: device()) { Glibc.recv(fd, buf, count, flags) }
    }

    /// sendmsg(2); `.wouldBlock` when the socket is full (EAGAIN, ENOBUFS).
    @inline(__always)
    static func sendmsg(_ fd: Int32, _ message: UnsafePointer<msghdr>, flags: Int32, device: @autoclosure () -> String) throws(SystemCallError) -> IOResult {
        try run("sendmsg", device: device(), noBuffersBlock: true) { Glibc.sendmsg(fd, message, flags) }
    }

    /// recvmsg(2); `.wouldBlock` when nothing waits.
    @inline(__always)
    static func recvmsg(_ fd: Int32, _ message: UnsafeMutablePointer<msghdr>, flags: Int32, device: @autoclosure () -> String) throws(SystemCallError) -> IOResult {
        try run("recvmsg", device: device()) { Glibc.recvmsg(fd, message, flags) }
    }

    /// sendmmsg(2): how many messages went; `.wouldBlock` when the socket is full.
    @inline(__always)
    static func sendmmsg(_ fd: Int32, _ messages: UnsafeMutablePointer<cnb_mmsghdr>, _ count: Int, flags: Int32,
                         device: @autoclosure () -> String) throws(SystemCallError) -> IOResult {
        precondition(count > 0, "sendmmsg: no messages")
        return try run("sendmmsg", device: device(), noBuffersBlock: true) { Int(cnb_sendmmsg(fd, messages, UInt32(count), flags)) }
    }

    /// recvmmsg(2): how many messages arrived; `.wouldBlock` when none waits.
    @inline(__always)
    static func recvmmsg(_ fd: Int32, _ messages: UnsafeMutablePointer<cnb_mmsghdr>, _ count: Int, flags: Int32,
                         device: @autoclosure () -> String) throws(SystemCallError) -> IOResult {
        precondition(count > 0, "recvmmsg: no messages")
        return try run("recvmmsg", device: device()) { Int(cnb_recvmmsg(fd, messages, UInt32(count), flags)) }
    }
}
