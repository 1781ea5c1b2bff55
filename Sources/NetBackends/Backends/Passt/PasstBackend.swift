/// `passt[,option...]`: user-mode networking by passt (passt.top), started and supervised
/// by netbe. passt gets one end of a unix socketpair (`-F`), so no socket file exists
/// anywhere; netbe's end carries QEMU's stream framing through the stream backend's own
/// code (`StreamBackend.init(adopting:)`). Options follow the slirp backend's spelling
/// (PasstOptions.swift). passt as root drops to nobody by itself; the socketpair needs no
/// file permissions.
enum PasstBackend {
    static let kind = BackendKind(
        name: "passt", prefixes: ["passt"],
        summary: "user-mode networking by a passt child process (Debian package passt)",
        availability: { PasstProcess.locate() == nil ? .unavailable(PasstProcess.missing) : .available },
        open: { (spec, loop) throws(NetBackendError) in try open(spec, loop) }
    )

    static func open(_ spec: BackendSpec, _ loop: NetEventLoop) throws(NetBackendError) -> NetBackend {
        let options = try PasstOptions(spec)
        guard let executable = PasstProcess.locate() else { throw .unavailable("\(spec.name): \(PasstProcess.missing)") }
        let supervisor = PasstSupervisor(executable: executable, arguments: options.arguments, loop: loop)
        let (process, fd) = try PasstProcess.start(executable: executable, arguments: options.arguments, awaitReady: true)
        let backend: StreamBackend
        do throws(NetBackendError) {
            backend = try StreamBackend(adopting: fd, peer: PasstSupervisor.peerName(process), owner: supervisor,
                                        spec: spec, kind: "passt", name: "passt", eventLoop: loop)
        } catch {
            process.terminate()
            throw error
        }
        supervisor.stream = backend
        do throws(NetBackendError) { try supervisor.adopt(process) } catch {
            backend.close()
            process.terminate()
            throw error
        }
        backend.logger.info("passt started (pid \(process.pid)): \(([executable] + options.arguments).joined(separator: " "))")
        return backend
    }
}
