import CNetBackends
import Foundation
import Glibc
import NetBackends

/// A vhost-user backend fed by a small python3 frontend (shared memfd "guest" memory, both
/// queues set up, 72-byte TX frames put in the ring and kicked on command).
final class VhostUserTrafficRig: TrafficRig {
    let socketPath = TrafficRig.tempPath("vu") + ".sock"
    let controlPath = TrafficRig.tempPath("vuc") + ".sock"
    let script = TrafficRig.tempPath("vu-frontend") + ".py"
    private var frontend: TestProcess?
    private let control: Int32

    init(loop: NetEventLoop) throws {
        try requireDebianPython()
        control = socket(AF_UNIX, cnb_SOCK_DGRAM | cnb_SOCK_CLOEXEC, 0)
        super.init(backend: try BackendRegistry.shared.open("vhost-user,socket=\(socketPath)", on: loop))
        try Self.frontendScript.write(toFile: script, atomically: true, encoding: .utf8)
        frontend = try TestProcess([debianPython, script, socketPath, controlPath])
    }

    /// Sends a command once the frontend is up (its control socket exists).
    private func command(_ text: String) throws {
        try waitUntil(10, "the vhost-user test frontend") { FileManager.default.fileExists(atPath: controlPath) }
        var to = sockaddr_un()
        to.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &to.sun_path) { p in
            for (i, b) in controlPath.utf8.enumerated() where i < p.count - 1 { p[i] = b }
        }
        let sent = withUnsafePointer(to: &to) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                Array(text.utf8).withUnsafeBytes { sendto(control, $0.baseAddress, $0.count, 0, sa, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
        }
        if sent < 0 { throw TestFailure("sendto \(controlPath): \(String(cString: strerror(errno)))") }
    }

    override func burst(_ count: Int, _ lt: LoopThread) throws { try command("burst \(count)") }
    override func startFlood(_ lt: LoopThread) throws { try command("flood") }
    override func stopFlood() { try? command("stop") }

    override func close() {
        super.close()
        _ = try? frontend?.stop(SIGKILL)
        frontend = nil
        Glibc.close(control)
        unlink(controlPath)
        unlink(script)
    }

    static let frontendScript = #"""
import array, mmap, os, select, socket, struct, sys, time

# A minimal vhost-user frontend for the receive-contract harnesses: it shares 1 MiB of
# "guest" memory, sets up both queues, and puts 72-byte TX frames (a 12-byte header and
# an ARP request) in the TX ring on command: "burst N", "flood", "stop" on a datagram socket.
SOCK, CONTROL = sys.argv[1], sys.argv[2]
U, SIZE, Q, BUF, TX = 0x7f0000000000, 1 << 20, 256, 0x10000, 0x4000
ctl = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
ctl.bind(CONTROL)
fd = os.memfd_create("guest")
os.ftruncate(fd, SIZE)
m = mmap.mmap(fd, SIZE)
frame = bytes(12) + b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x02" + b"\x08\x06" + bytes(46)
for i in range(Q):
    m[BUF + 128 * i: BUF + 128 * i + len(frame)] = frame
    o = TX + 16 * i
    m[o:o + 16] = struct.pack("<QIHH", BUF + 128 * i, len(frame), 0, 0)

def connect():
    while True:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(SOCK)
            return s
        except OSError:
            time.sleep(0.02)

def send(s, req, payload=b"", fds=()):
    msg = struct.pack("<III", req, 1, len(payload)) + payload
    if fds:
        s.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        s.sendall(msg)

s = connect()
send(s, 1)
h = s.recv(12, socket.MSG_WAITALL)
offered = struct.unpack("<Q", s.recv(8, socket.MSG_WAITALL))[0]
send(s, 3)
send(s, 2, struct.pack("<Q", offered & (1 << 32)))
send(s, 5, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, SIZE, U, 0), [fd])
kicks = {}
for q, base in ((0, 0), (1, TX)):
    send(s, 8, struct.pack("<II", q, Q))
    send(s, 10, struct.pack("<II", q, 0))
    send(s, 9, struct.pack("<IIQQQQ", q, 0, U + base, U + base + 0x2000, U + base + 0x1000, 0))
    call, kick = os.eventfd(0, os.EFD_NONBLOCK), os.eventfd(0, os.EFD_NONBLOCK)
    send(s, 13, struct.pack("<Q", q), [call])
    send(s, 12, struct.pack("<Q", q), [kick])
    kicks[q] = kick

avail = 0
def used():
    return struct.unpack("<H", m[TX + 0x2002:TX + 0x2004])[0]

def put(n):
    global avail
    done = 0
    while done < n:
        room = Q - ((avail - used()) & 0xffff)
        if room == 0:
            break
        k = min(room, n - done)
        for j in range(k):
            o = TX + 0x1000 + 4 + 2 * ((avail + j) % Q)
            m[o:o + 2] = struct.pack("<H", (avail + j) % Q)
        avail = (avail + k) & 0xffff
        m[TX + 0x1002:TX + 0x1004] = struct.pack("<H", avail)
        done += k
    os.eventfd_write(kicks[1], 1)
    return done

print("ready", flush=True)
flooding, owed = False, 0
while True:
    r, _, _ = select.select([ctl, s], [], [], 0.001 if (flooding or owed) else None)
    if s in r and s.recv(4096) == b"":
        sys.exit(0)
    if ctl in r:
        cmd = ctl.recv(100).decode().split()
        if cmd[0] == "burst":
            owed += int(cmd[1])
        elif cmd[0] == "flood":
            flooding = True
        elif cmd[0] == "stop":
            flooding = False
    if owed:
        owed -= put(owed)
    if flooding:
        put(64)
"""#
}
