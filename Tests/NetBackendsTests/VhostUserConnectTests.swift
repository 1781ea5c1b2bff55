import Foundation
import Testing

/// `server=off`: netbe connects to a frontend that listens (QEMU's `server=on`), again
/// after it left when `reconnect=` is given, and otherwise exits 1 saying so. The frontend
/// is a python3 listener that asks for the features and hangs up.
@Suite struct VhostUserConnectTests {
    static let listener = #"""
import socket, struct, sys
path, rounds = sys.argv[1], int(sys.argv[2])
l = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
l.bind(path)
l.listen(1)
print("listening", flush=True)
l.settimeout(10)
for i in range(rounds):
    s, _ = l.accept()
    s.sendall(struct.pack("<III", 1, 1, 0))
    h = s.recv(12, socket.MSG_WAITALL)
    req, flags, size = struct.unpack("<III", h)
    features = struct.unpack("<Q", s.recv(size, socket.MSG_WAITALL))[0]
    print("%s from connection %d" % ("VERSION_1" if features >> 32 & 1 else "no VERSION_1", i + 1), flush=True)
    s.close()
"""#

    func startListener(_ path: String, rounds: Int) throws -> TestProcess {
        try requireDebianPython()
        let p = try TestProcess([debianPython, "-c", Self.listener, path, String(rounds)])
        try p.waitForLine("listening")
        return p
    }

    @Test(.timeLimit(.minutes(1))) func reconnectsToAListeningFrontend() throws {
        let sock = TestSocketPath("vuc")
        let frontend = try startListener(sock.path, rounds: 2)
        let netbe = try NetbeBinary.start(["connect", "vhost-user,socket=\(sock.path),server=off,reconnect=1", "null"])
        #expect(try frontend.wait(seconds: 20) == 0, "two connections served: \(frontend.stdout) \(frontend.stderr)")
        // VERSION_1 (bit 32) offered on both connections.
        #expect(frontend.stdout.contains("VERSION_1 from connection 1") && frontend.stdout.contains("VERSION_1 from connection 2")
                 && !frontend.stdout.contains("no VERSION_1"), "\(frontend.stdout)")
        #expect(try netbe.stop() == 0)
    }

    @Test(.timeLimit(.minutes(1))) func withoutReconnectTheFrontendLeavingEndsNetbe() throws {
        let sock = TestSocketPath("vuc")
        let frontend = try startListener(sock.path, rounds: 1)
        let netbe = try NetbeBinary.start(["connect", "vhost-user,socket=\(sock.path),server=off", "null"])
        #expect(try frontend.wait(seconds: 20) == 0)
        #expect(try netbe.wait(seconds: 10) == 1)
        #expect(netbe.stderr.contains("reconnect= is not set"), "\(netbe.stderr)")
    }

    @Test func nobodyListeningOrBadSpecs() throws {
        let sock = TestSocketPath("vuc")
        let alone = try NetbeBinary.run(["connect", "vhost-user,socket=\(sock.path),server=off", "null"])
        #expect(alone.status == 1 && alone.stderr.contains("no vhost-user frontend listens"), "\(alone)")
        for bad in ["vhost-user", "vhost-user,socket=\(sock.path),reconnect=1", "vhost-user,socket=\(sock.path),queues=2"] {
            let r = try NetbeBinary.run(["connect", bad, "null"])
            #expect(r.status == 2, "\(bad): \(r)")
        }
    }
}
