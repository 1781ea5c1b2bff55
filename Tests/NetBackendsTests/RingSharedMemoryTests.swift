import CNetBackends
import Foundation
import NetBackends
import Testing

/// The switch's building block: two processes share netmap-format rings in a sealed memfd
/// and wake each other with eventfds. This process plays a port (user side: sends on the
/// TX ring, receives on the RX ring); `netbe ring-echo` plays the switch (kernel side of
/// both rings) and puts every frame back. The helper is spawned with the memfd and both
/// eventfds as its fds 3, 4 and 5 (no fork in a threaded test process).
@Suite struct RingSharedMemoryTests {
    @Test(arguments: [(UInt64(7), 2048, 256), (UInt64(8), 64, 64)])
    func twoProcessesExchangeFramesThroughAMemfdWithEventfdKicks(seed: UInt64, bufferSize: Int, slots: Int) throws {
        let format = NetmapRingFormatter(transmitRings: 1, receiveRings: 1, slots: slots, bufferSize: bufferSize)
        let shared = try SharedRingMemory.create(name: "netbe-ring-test", size: format.size)
        format.format(shared.memory, name: "test-port")
        let toHelper = try RingKick.make(), fromHelper = try RingKick.make()
        defer { toHelper.close(); fromHelper.close() }
        let count = 20000
        // The helper counts its allocations while it echoes (malloc-interposer preloaded).
        let interposer = URL(fileURLWithPath: try NetbeBinary.path).deletingLastPathComponent().appendingPathComponent("libMallocInterposerSwift.so").path
        guard FileManager.default.fileExists(atPath: interposer) else { throw TestFailure("\(interposer) is not built (swift build --build-tests)") }
        let helper = try SpawnedHelper([try NetbeBinary.path, "ring-echo", "--memfd", "3", "--kick", "4", "--wake", "5",
                                        "--frames", "\(count)", "--idle", "20", "--count-mallocs"],
                                       fds: [shared.fd, toHelper.fd, fromHelper.fd], environment: ["LD_PRELOAD=\(interposer)"])
        let layout = try shared.memory.interface(at: 0)
        let sender = NetmapRingSender(layout.transmit[0])
        let receiver = NetmapRingReceiver(layout.receive[0])
        let list = ReceiveList(capacity: 70000)
        var g = SplitMix64(seed: seed)
        let maxLength = min(9000, bufferSize * min(64, slots - 1))
        let lengths = (0..<count).map { _ in Int.random(in: 0..<4, using: &g) == 0 ? Int.random(in: 1...maxLength, using: &g) : Int.random(in: 60...1514, using: &g) }
        var sent = 0, received = 0
        let deadline = Date().addingTimeInterval(60)
        while received < count {
            var progress = false
            let batch = Int.random(in: 1...64, using: &g)
            var n = 0
            while sent < count && n < batch {
                let frame = RingFrames.make(length: lengths[sent], number: sent)
                let r = RingFrames.withIOVecs(frame, cuts: [frame.count / 2]) { sender.send($0) }
                if r == .noSpace { break }
                #expect(r == .queued(slots: (frame.count + bufferSize - 1) / bufferSize))
                sent += 1
                n += 1
            }
            if sender.publish() { try toHelper.signal(); progress = true }
            while case let r = list.receive(receiver), r != .empty {
                #expect(r == .frame(length: lengths[received]), "frame \(received)")
                if case .frame(let length) = r {
                    #expect(list.bytes(length) == RingFrames.make(length: lengths[received], number: received), "frame \(received) intact")
                }
                received += 1
                progress = true
            }
            if receiver.release() { try toHelper.signal() }
            if !progress {
                guard Date() < deadline else { throw TestFailure("only \(received) of \(count) frames came back; helper: \(helper.status()) \(helper.stderr)") }
                _ = try fromHelper.wait(milliseconds: 1000)
            }
        }
        #expect(received == count)
        #expect(try helper.wait(seconds: 10) == 0, "ring-echo exits 0 after echoing every frame: \(helper.stderr)")
        // Its report: "ring-echo: 20000 frames, 0 mallocs, ...": nothing allocated per frame
        // on the kernel side of either ring (receive, send, publish, release, kicks).
        // Optimized builds only (CI's `swift test -c release`): the same code unoptimized
        // allocates about 2 times per frame (Swift's -Onone codegen, not the design).
        #if DEBUG
        #expect(helper.stderr.contains("ring-echo: \(count) frames,"), "\(helper.stderr)")
        #else
        #expect(helper.stderr.contains("ring-echo: \(count) frames, 0 mallocs,"), "\(helper.stderr)")
        #endif
        #expect(sender.faults == NetmapPeerFaults() && receiver.faults == NetmapPeerFaults())
    }

    /// A memfd whose size the creator did not seal could be shrunk under us (SIGBUS on
    /// the next access): attaching refuses it.
    @Test func attachingRefusesAnUnsealedMemfd() throws {
        let fd = cnb_memfd_create("netbe-unsealed")
        #expect(fd >= 0)
        #expect(ftruncate(fd, 65536) == 0)
        #expect(throws: NetBackendError.self) { _ = try SharedRingMemory.attach(fd: fd) }
        let sealed = try SharedRingMemory.create(name: "netbe-sealed", size: 65536)
        let again = try SharedRingMemory.attach(fd: dup(sealed.fd))
        #expect(again.memory.size == 65536)
        #expect(ftruncate(sealed.fd, 4096) != 0, "shrinking a sealed memfd fails")
    }
}

/// A helper process started with `posix_spawn`, `fds` becoming its 3, 4, 5...; killed
/// by PID and reaped when the value goes away.
final class SpawnedHelper {
    let pid: pid_t
    private var exitStatus: Int32?

    private let stderrPath = FileManager.default.temporaryDirectory.appendingPathComponent("nbt-helper-\(UUID().uuidString.prefix(8)).err").path

    /// `environment` entries (`NAME=value`) are added to this process's.
    init(_ args: [String], fds: [Int32], environment: [String] = []) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        // Copies above any target number first, so that no target overwrites a source.
        let high = fds.map { fcntl($0, F_DUPFD_CLOEXEC, 100) }
        defer { for fd in high { close(fd) } }
        for (i, fd) in high.enumerated() {
            guard fd >= 0 else { throw TestFailure("fcntl F_DUPFD_CLOEXEC: \(String(cString: strerror(errno)))") }
            posix_spawn_file_actions_adddup2(&actions, fd, Int32(3 + i))
        }
        let argv = args.map { strdup($0) } + [nil]
        let env = (ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" } + environment).map { strdup($0) } + [nil]
        defer { for p in argv + env { free(p) } }
        var pid: pid_t = 0
        let r = posix_spawn(&pid, args[0], &actions, nil, argv, env)
        guard r == 0 else { throw TestFailure("posix_spawn \(args[0]): \(String(cString: strerror(r)))") }
        self.pid = pid
    }

    deinit {
        if exitStatus == nil {
            kill(pid, SIGKILL)
            var s: Int32 = 0
            waitpid(pid, &s, 0)
        }
        unlink(stderrPath)
    }

    /// What it wrote on stderr so far.
    var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// "running" or how it ended.
    func status() -> String {
        if let s = poll() { return "exited \(s)" }
        return "running"
    }

    private func poll() -> Int32? {
        if let exitStatus { return exitStatus }
        var s: Int32 = 0
        guard waitpid(pid, &s, WNOHANG) == pid else { return nil }
        exitStatus = (s & 0x7f) == 0 ? (s >> 8) & 0xff : 128 + (s & 0x7f)
        return exitStatus
    }

    /// Waits for the exit status, at most `seconds`.
    func wait(seconds: Double) throws -> Int32 {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let s = poll() { return s }
            usleep(10000)
        }
        throw TestFailure("helper pid \(pid) did not exit in \(seconds) s")
    }
}
