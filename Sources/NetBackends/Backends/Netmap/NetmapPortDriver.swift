/// What moves a netmap port's rings along: the netmap kernel module (`NetmapPort`:
/// ioctls on `/dev/netmap`) or a peer process serving the rings over shared memory
/// (`NetmapSharedPort`: eventfd kicks, as the switch of issue 10 will). `NetmapBackend`
/// holds the frame logic once, over either.
protocol NetmapPortDriver: AnyObject {
    /// Watched for readability: frames may wait (and, when `signalsRoomOnRead`, TX slots
    /// may have come back).
    var fd: Int32 { get }
    var transmit: [NetmapRingSender] { get }
    var receive: [NetmapRingReceiver] { get }
    /// The virtio-net header lengths the port can carry ([0] when none).
    var headerLengths: [Int] { get }
    /// True when the peer's "TX slots are back" arrives as readability of `fd` (an
    /// eventfd); false when it is writability (netmap's POLLOUT).
    var signalsRoomOnRead: Bool { get }

    func setHeaderLength(_ length: Int) throws(NetBackendError)
    /// After publishing TX rings: have the frames sent.
    func transmitSync() throws(NetBackendError)
    /// After handing RX slots back, when the rings look empty: look for more.
    func receiveSync() throws(NetBackendError)
    /// Makes `fd` readable again if frames may wait (after receive was off a while).
    func rearm()
    /// Takes a readiness that nobody is receiving for (an eventfd's counter).
    func acknowledge()
    func close()
}
