import Foundation
import Testing

/// A hostile vhost-user frontend (a python3 script speaking the protocol over the real
/// socket, with guest memory in a memfd it shares): descriptors outside memory, beyond the
/// ring, looping, bad indirect tables, absurd lengths, wrong directions, an available index
/// that runs ahead, and broken messages (huge sizes, unknown requests, descriptor counts
/// that do not match, a region larger than its file, a ring outside memory, guest memory
/// truncated after it was mapped). netbe skips and counts every bad chain, closes every
/// broken connection, and serves the next one.
@Suite struct VhostUserHostileTests {
    @Test(.timeLimit(.minutes(1))) func netbeSurvivesAndCountsAHostileFrontend() throws {
        try requireDebianPython()
        let sock = TestSocketPath("vuh")
        let script = TrafficRig.tempPath("vhost-hostile") + ".py"
        try Self.script.write(toFile: script, atomically: true, encoding: .utf8)
        defer { unlink(script) }
        let netbe = try NetbeBinary.start(["connect", "vhost-user,socket=\(sock.path)", "null,generate=64"])
        let frontend = try TestProcess([debianPython, script, sock.path])
        let status = try frontend.wait(seconds: 40)
        #expect(status == 0, "the hostile frontend's checks:\n\(frontend.stdout)\n\(frontend.stderr)\nnetbe:\n\(netbe.stderr.suffix(3000))")
        #expect(frontend.stdout.contains("DONE 0 failures"), "\(frontend.stdout)")
        #expect(try netbe.stop() == 0, "netbe survived: \(netbe.stderr.suffix(2000))")
        let counters = try NetbeBinary.counters(netbe.stdout)
        let fromGuest = counters.first { ($0["from"] as? String) == sock.path }
        #expect(fromGuest?["frames"] as? Int == 2, "the two good TX chains went on: \(counters)")
        #expect((fromGuest?["drops"] as? [String: Any])?["malformed"] as? Int == 8, "the eight bad TX chains were counted: \(counters)")
        // The generator's frames wait while no guest RX queue runs: none dropped for want of a peer.
        let toGuest = counters.first { ($0["to"] as? String) == sock.path }
        #expect((toGuest?["drops"] as? [String: Any])?["no_peer"] as? Int == 0, "frames for the guest waited: \(counters)")
        for why in ["unsupported vhost-user request 999", "more than the 264", "fewer than offset + size", "ring addresses outside the memory table", "truncated its guest memory file"] {
            #expect(netbe.stderr.contains(why), "netbe logged '\(why)'")
        }
    }

    static let script = #"""
import array, mmap, os, socket, struct, sys, time

SOCK = sys.argv[1]
U = 0x7f0000000000          # the frontend's "virtual address" of guest address 0
SIZE = 1 << 20
Q = 256
BUF = 0x10000
failures = []

def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)

def connect():
    for _ in range(100):
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(SOCK)
            s.settimeout(5)
            return s
        except OSError:
            time.sleep(0.05)
    raise SystemExit("cannot connect to " + SOCK)

def send(s, req, payload=b"", fds=(), flags=1, size=None):
    msg = struct.pack("<III", req, flags, len(payload) if size is None else size) + payload
    if fds:
        s.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        s.sendall(msg)

def recv(s):
    h = s.recv(12, socket.MSG_WAITALL)
    if len(h) < 12:
        return None
    req, flags, size = struct.unpack("<III", h)
    return req, flags, s.recv(size, socket.MSG_WAITALL) if size else b""

def closed_by_peer(s):
    try:
        while True:
            d = s.recv(4096)
            if d == b"":
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False

def memory():
    fd = os.memfd_create("guest")
    os.ftruncate(fd, SIZE)
    return fd, mmap.mmap(fd, SIZE)

def setup(s, fd, kicks):
    send(s, 1)
    offered = struct.unpack("<Q", recv(s)[2])[0]
    want = offered & ((1 << 32) | (1 << 15) | (1 << 28))   # VERSION_1, MRG_RXBUF, INDIRECT_DESC
    send(s, 3)
    send(s, 2, struct.pack("<Q", want))
    send(s, 5, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, SIZE, U, 0), [fd])
    for q, base in ((0, 0), (1, 0x4000)):
        send(s, 8, struct.pack("<II", q, Q))
        send(s, 10, struct.pack("<II", q, 0))
        send(s, 9, struct.pack("<IIQQQQ", q, 0, U + base, U + base + 0x2000, U + base + 0x1000, 0))
        call = os.eventfd(0, os.EFD_NONBLOCK)
        kick = os.eventfd(0, os.EFD_NONBLOCK)
        send(s, 13, struct.pack("<Q", q), [call])
        send(s, 12, struct.pack("<Q", q), [kick])
        kicks[q] = kick

def desc(m, base, i, addr, length, flags=0, nxt=0):
    m[base + 16 * i: base + 16 * i + 16] = struct.pack("<QIHH", addr & 0xffffffffffffffff, length, flags, nxt)

def publish(m, base, heads, start=0):
    for k, h in enumerate(heads):
        o = base + 0x1000 + 4 + 2 * ((start + k) % Q)
        m[o:o + 2] = struct.pack("<H", h)
    m[base + 0x1002: base + 0x1004] = struct.pack("<H", (start + len(heads)) & 0xffff)

def used_idx(m, base):
    return struct.unpack("<H", m[base + 0x2002: base + 0x2004])[0]

def used_elem(m, base, i):
    o = base + 0x2004 + 8 * i
    return struct.unpack("<II", m[o:o + 8])

def wait_used(m, base, n, seconds=5):
    end = time.time() + seconds
    while time.time() < end and used_idx(m, base) != n:
        time.sleep(0.01)
    return used_idx(m, base)

# 1. Bad TX chains among good ones: netbe skips and counts the bad, forwards the good.
fd, m = memory()
s = connect()
kicks = {}
setup(s, fd, kicks)
TX = 0x4000
frame = bytes(12) + b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x09" + b"\x08\x06" + bytes(46)
m[BUF:BUF + len(frame)] = frame
desc(m, TX, 1, 0x200000, 100)                        # outside the memory table
desc(m, TX, 2, BUF, 72, 1, 999)                      # next index beyond the ring
desc(m, TX, 3, BUF, 20, 1, 3)                        # a chain that loops on itself
desc(m, TX, 4, 0x20000, 7, 4)                        # indirect table of 7 bytes
m[0x20000:0x20010] = struct.pack("<QIHH", 0x20100, 16, 4, 0)
desc(m, TX, 5, 0x20000, 16, 4)                       # nested indirect table
desc(m, TX, 6, BUF, 0xffffffff)                      # far longer than any frame
desc(m, TX, 7, BUF, 72, 2)                           # device-writable buffer on TX
desc(m, TX, 8, -16, 32)                              # wraps around the address space
desc(m, TX, 9, BUF, 72)                              # good
m[0x21000:0x21020] = struct.pack("<QIHH", BUF, 12, 1, 1) + struct.pack("<QIHH", BUF + 12, 60, 0, 0)
desc(m, TX, 10, 0x21000, 32, 4)                      # good, through an indirect table
publish(m, TX, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
os.eventfd_write(kicks[1], 1)
check(wait_used(m, TX, 10) == 10, "netbe used all 10 TX chains, 8 of them malformed")

# 2. Bad RX chains before a good one: skipped (used with length 0), the frame lands whole.
RX = 0
desc(m, RX, 1, 0x300000, 2048, 2)                    # outside the memory table
desc(m, RX, 2, 0x40000, 2048, 0)                     # read-only buffer on RX
desc(m, RX, 3, 0x40000, 2048, 2)                     # good
publish(m, RX, [1, 2, 3])
os.eventfd_write(kicks[0], 1)
check(wait_used(m, RX, 3) == 3, "netbe used the 3 RX chains")
lens = [used_elem(m, RX, i) for i in range(3)]
check(lens[0] == (1, 0) and lens[1] == (2, 0), "the bad RX chains were returned empty: %s" % lens[:2])
check(lens[2] == (3, 12 + 64), "the frame went into the good chain whole: %s" % (lens[2],))
check(struct.unpack("<H", m[0x4000a:0x4000c])[0] == 1, "num_buffers is 1")

# 3. The available index runs ahead by more than the ring: the queue stops, nothing is read.
m[TX + 0x1002:TX + 0x1004] = struct.pack("<H", 10 + 1000)
os.eventfd_write(kicks[1], 1)
time.sleep(0.3)
check(used_idx(m, TX) == 10, "nothing taken from a TX ring whose index ran ahead")
s.close()

# 3b. Guest memory truncated under netbe after SET_MEM_TABLE: netbe's next access to it
# must not kill it (SIGBUS): the connection is closed, netbe serves the next one.
fd2, m2 = memory()
s = connect()
kicks2 = {}
setup(s, fd2, kicks2)
send(s, 1)                                           # answered in order: the table is mapped by then
check(recv(s) is not None, "netbe answered after the memory table")
m2[BUF:BUF + len(frame)] = frame
desc(m2, TX, 1, BUF, 72)
publish(m2, TX, [1])
m2.close()                                           # we never touch it again: it would fault here too
os.ftruncate(fd2, 0)
os.eventfd_write(kicks2[1], 1)
check(closed_by_peer(s), "netbe closed the connection whose guest memory was truncated")
s.close()

# 4. Protocol abuse: each ends that connection, netbe serves the next.
def abuse(name, act):
    s = connect()
    act(s)
    check(closed_by_peer(s), "netbe closed the connection after " + name)
    s.close()

def big_size(s): send(s, 1, b"", size=0xffff0000)
def unknown(s): send(s, 999)
def fd_mismatch(s):
    f, _ = memory()
    send(s, 5, struct.pack("<II", 2, 0) + struct.pack("<QQQQ", 0, SIZE, U, 0) * 2, [f])
def short_file(s):
    f, _ = memory()
    send(s, 5, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, 16 * SIZE, U, 0), [f])
def ring_outside(s):
    f, _ = memory()
    send(s, 5, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, SIZE, U, 0), [f])
    send(s, 8, struct.pack("<II", 1, Q))
    send(s, 9, struct.pack("<IIQQQQ", 1, 0, U + SIZE - 16, U, U, 0))
def bad_num(s): send(s, 8, struct.pack("<II", 0, 3))
def bad_queue(s): send(s, 8, struct.pack("<II", 7, 256))
def log_base(s): send(s, 6, struct.pack("<QQ", 0, 0))
def short_payload(s): send(s, 2, b"\x01\x02")
def bad_version(s): send(s, 1, flags=2)

for name, act in [("a 4 GiB payload size", big_size), ("an unknown request", unknown),
                  ("a memory table with too few descriptors", fd_mismatch),
                  ("a region larger than its file", short_file), ("a ring outside memory", ring_outside),
                  ("a ring size of 3", bad_num), ("queue 7", bad_queue), ("SET_LOG_BASE", log_base),
                  ("SET_FEATURES with 2 payload bytes", short_payload), ("protocol version 2", bad_version)]:
    abuse(name, act)

# A message cut short by the frontend leaving.
s = connect()
s.sendall(struct.pack("<III", 2, 1, 8) + b"\x00\x00")
s.close()

# 5. Still serving.
s = connect()
send(s, 1)
r = recv(s)
check(r is not None and r[0] == 1 and len(r[2]) == 8, "netbe still answers GET_FEATURES")
s.close()
print("DONE", len(failures), "failures", flush=True)
sys.exit(1 if failures else 0)
"""#
}
