import Glibc
import NetBackends

// Two backends joined by a unix socket, as QEMU and netbe would be: one listens, the
// other connects. No privileges needed; a tap ("tap0,netns=vm1") opens the same way.
let loop = try NetEventLoop()
let path = "/tmp/netbackends-quickstart-\(getpid()).sock"
let server = try BackendRegistry.shared.open("stream,listen=unix:\(path)", on: loop)
let client = try BackendRegistry.shared.open("stream,connect=unix:\(path)", on: loop)

// Negotiate as a virtio-net frontend would: the features it accepts, its header length
// (0, 10 or 12; a tap offers checksum/TSO offloads with a 12-byte header).
try server.setCapabilities([], vnetHeaderLength: 0)
try client.setCapabilities([], vnetHeaderLength: 0)

// A broadcast Ethernet frame (local experimental EtherType 0x88b5), padded to 60 bytes.
let sent: [UInt8] = [UInt8](repeating: 0xff, count: 6) + [0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x88, 0xb5]
    + Array("hello from NetBackends".utf8) + [UInt8](repeating: 0, count: 24)

let frame = FrameBuffer()   // owned and reused; the iovec API copies nothing
server.setReceiveHandler {
    // Called on the loop thread while frames wait; receive until .empty.
    while case .frame = try? server.receive(into: frame) {
        print("received \(frame.count) bytes: \(frame.array == sent ? "the frame sent" : "NOT the frame sent")")
        loop.stop(throwing: frame.array == sent ? nil : NetBackendError.invalidArgument("wrong frame"))
    }
}
server.enableReceive()
_ = try loop.addTimer(name: "timeout", intervalMilliseconds: 5000) {
    loop.stop(throwing: NetBackendError.invalidArgument("no frame within 5 s"))
}

_ = try client.send(sent)
try loop.run()   // until loop.stop(); server.disableReceive() from any thread is safe
client.close()
server.close()
