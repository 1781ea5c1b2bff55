#if canImport(Glibc)
import Glibc
#endif

/// Sending with a virtio-net header (checksum offload and TSO accepted): a TSO frame is
/// cut by `TCPSegmenter` straight into the UDP GSO batch, each segment behind its own
/// VXLAN header, so that the kernel sends the run with one sendmsg (UDP_SEGMENT) and no
/// segment is copied twice; a frame asking for its checksum gets it in its queued copy.
extension VxlanBackend {
    func sendOffloaded(_ frame: UnsafeBufferPointer<iovec>, headerLength h: Int) throws(NetBackendError) -> SendResult {
        guard let b = batch else {   // offloads are offered only with the batch
            statistics.countDrop(.offloadUnsupported)
            return .dropped(.offloadUnsupported)
        }
        // The header and the frame as contiguous bytes: as the relay hands them (one
        // piece, or the header alone then the frame), else put together in the scratch.
        let total = IOVectors.length(of: frame)
        guard total >= h + 14 else {
            statistics.countDrop(.truncated)
            return .dropped(.truncated)
        }
        let header: UnsafeRawPointer
        let f: UnsafeMutableRawPointer
        if frame.count == 1, let base = frame[0].iov_base {
            header = UnsafeRawPointer(base)
            f = base + h
        } else if frame.count == 2, frame[0].iov_len == h, let hb = frame[0].iov_base, let fb = frame[1].iov_base {
            header = UnsafeRawPointer(hb)
            f = fb
        } else {
            guard total <= Self.scratchCapacity else {
                statistics.countDrop(.oversized)
                return .dropped(.oversized)
            }
            IOVectors.gather(frame, into: frameScratch)
            header = UnsafeRawPointer(frameScratch)
            f = frameScratch + h
        }
        let length = total - h

        // What the header asks for, checked before anything is queued.
        let type = header.load(fromByteOffset: 1, as: UInt8.self) & ~VirtioNetHeader.gsoECN
        var segmenter: TCPSegmenter?
        var datagrams = 1
        var bytes = length + VxlanHeader.length
        if type != VirtioNetHeader.GSOType.none.rawValue {
            let v6 = type == VirtioNetHeader.GSOType.tcpv6.rawValue
            guard v6 || type == VirtioNetHeader.GSOType.tcpv4.rawValue else {
                statistics.countDrop(.offloadUnsupported)   // UDP GSO: never offered
                return .dropped(.offloadUnsupported)
            }
            let gsoSize = Int(UInt16(littleEndian: header.loadUnaligned(fromByteOffset: 4, as: UInt16.self)))
            guard let s = TCPSegmenter(frame: f, length: length, gsoSize: gsoSize), s.isIPv6 == v6 else {
                statistics.countDrop(.malformed)
                return .dropped(.malformed)
            }
            segmenter = s
            datagrams = s.count
            bytes = s.count * (VxlanHeader.length + s.maximumSegmentLength)
        }
        guard bytes <= VxlanSendBatch.capacity, datagrams <= VxlanSendBatch.maximumDatagrams else {
            statistics.countDrop(.oversized)   // not reached: the batch holds the worst frame
            return .dropped(.oversized)
        }

        let known = table.lookup(VxlanForwardingTable.mac(f.assumingMemoryBound(to: UInt8.self)), now: VxlanForwardingTable.now())
        if let peer = known ?? (table.configured == 1 ? 0 : nil) {
            guard try makeRoom(b, datagrams: datagrams, bytes: bytes, peer: peer) else {
                senderWaiting = true
                return .wouldBlock
            }
            queue(header, f, length, segmenter, into: b, peer: peer)
            count(length, gso: segmenter != nil)
            try flushBatch(force: false)
            return .sent(length)
        }
        // Head-end replication: a copy queued and sent to every remote in turn. A full
        // socket for the first is back-pressure; for a later one, the copy is lost.
        if !b.isEmpty {
            try flushBatch(force: true)
            if !b.isEmpty { senderWaiting = true; return .wouldBlock }
        }
        for peer in 0..<table.configured {
            guard try makeRoom(b, datagrams: datagrams, bytes: bytes, peer: peer) else {
                if peer == 0 { senderWaiting = true; return .wouldBlock }
                statistics.countLostAfterSend(.noSpace, UInt64(datagrams))
                continue
            }
            queue(header, f, length, segmenter, into: b, peer: peer)
            try flushBatch(force: true)
        }
        count(length, gso: segmenter != nil)
        return .sent(length)
    }

    /// Writes the frame's datagrams at the batch's end: every segment of a TSO frame, or
    /// the frame itself with its checksum finished when the header asks for that.
    private func queue(_ header: UnsafeRawPointer, _ f: UnsafeMutableRawPointer, _ length: Int,
                       _ segmenter: TCPSegmenter?, into b: VxlanSendBatch, peer: Int) {
        if var s = segmenter {
            while true {
                let at = b.end
                guard let n = s.next(into: at + VxlanHeader.length) else { break }
                at.copyMemory(from: sendHeader, byteCount: VxlanHeader.length)
                b.commit(VxlanHeader.length + n, peer: peer)
            }
            return
        }
        let at = b.end
        at.copyMemory(from: sendHeader, byteCount: VxlanHeader.length)
        (at + VxlanHeader.length).copyMemory(from: f, byteCount: length)
        InternetChecksum.completeIfNeeded(header: header, frame: at + VxlanHeader.length, length: length)
        b.commit(VxlanHeader.length + length, peer: peer)
    }

    private func count(_ length: Int, gso: Bool) {
        statistics.frames &+= 1
        statistics.bytes &+= UInt64(length)
        if gso {
            statistics.gsoFrames &+= 1
            statistics.softwareSegmented &+= 1
        }
    }
}
