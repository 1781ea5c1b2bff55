/// The hook that lets another kind reuse the stream backend's framing on a connection it
/// made itself (`StreamBackend.init(adopting:...)`): passt is started with one end of a
/// socketpair, and netbe's end is a stream peer like any other.
protocol StreamPeerOwner: AnyObject {
    /// The peer left or sent something that cannot be framed; its descriptor is closed
    /// already and the link shows down. Hand a new one in with `attach(fd:peer:)`.
    func streamPeerLeft(_ why: String)
    /// The backend is closing: stop whatever serves the peer.
    func streamClosing()
}
