#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target (Fuzz/Corpus/<target>/seed-*): small,
well-formed inputs that reach deep into each parser. Run from Fuzz/; the output is
committed, so this only needs running again when a seed is added."""
import os, struct

def csum(data):
    if len(data) % 2: data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return s

def eth(ethertype):
    return bytes.fromhex("525400123456") + bytes.fromhex("525400abcdef") + struct.pack("!H", ethertype)

def tcp(seq, ack, flags, payload, v6=False, src=b"\x0a\x00\x02\x0f", dst=b"\x0a\x00\x02\x02", ipid=1, opts=b""):
    hl = 20 + len(opts)
    t = struct.pack("!HHIIBBHHH", 40000, 80, seq, ack, (hl // 4) << 4, flags, 65535, 0, 0) + opts + payload
    if v6:
        src, dst = b"\xfe\xc0" + b"\0" * 13 + b"\x0f", b"\xfe\xc0" + b"\0" * 13 + b"\x02"
        pseudo = src + dst + struct.pack("!IxxxB", len(t), 6)
        t = t[:16] + struct.pack("!H", ~csum(pseudo + t) & 0xffff) + t[18:]
        ip = struct.pack("!IHBB", 0x60000000, len(t), 6, 64) + src + dst
        return eth(0x86dd) + ip + t
    pseudo = src + dst + struct.pack("!xBH", 6, len(t))
    t = t[:16] + struct.pack("!H", ~csum(pseudo + t) & 0xffff) + t[18:]
    ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(t), ipid, 0x4000, 64, 6, 0) + src + dst
    ip = ip[:10] + struct.pack("!H", ~csum(ip) & 0xffff) + ip[12:]
    return eth(0x0800) + ip + t

def vnet(flags=0, gso=0, hdr_len=0, gso_size=0, start=0, offset=0):
    return struct.pack("<BBHHHHH", flags, gso, hdr_len, gso_size, start, offset, 1)

ACK, PSH, SYN = 0x10, 0x08, 0x02
seg = [tcp(1000 + i * 100, 5000, ACK | (PSH if i == 2 else 0), bytes([65 + i]) * 100, ipid=i) for i in range(3)]
seg6 = [tcp(7000 + i * 64, 1, ACK, bytes([97 + i]) * 64, v6=True) for i in range(2)]
acks = [tcp(1, 2000 + i * 1448, ACK, b"") for i in range(3)]
syn = tcp(0, 0, SYN, b"", opts=bytes.fromhex("020405b40402080a0000000100000000"))
superframe = tcp(1000, 5000, ACK | PSH, bytes(range(256)) * 12)
superframe6 = tcp(1000, 5000, ACK, bytes(range(200)) * 10, v6=True)
arp = eth(0x0806) + bytes.fromhex("0001080006040001525400abcdef0a00020f0000000000000a000202")
udp_payload = b"\x01\x01\x06\x00" + b"\0" * 236 + b"\x63\x82\x53\x63\x35\x01\x01\xff"
udp = struct.pack("!HHHH", 68, 67, 8 + len(udp_payload), 0) + udp_payload
ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0) + b"\0\0\0\0" + b"\xff\xff\xff\xff"
ip = ip[:10] + struct.pack("!H", ~csum(ip) & 0xffff) + ip[12:]
dhcp = eth(0x0800) + ip + udp

def partial(frame, v6=False):
    """The frame with NEEDS_CSUM: the TCP checksum field holds the pseudo-header sum."""
    t = 14 + (40 if v6 else 20)
    return vnet(flags=1, start=t, offset=16), frame
def gso(frame, size, v6=False):
    t = 14 + (40 if v6 else 20)
    return vnet(flags=1, gso=4 if v6 else 1, hdr_len=t + 20, gso_size=size, start=t, offset=16), frame

def virtqueue(size_log2, features, chains):
    """VirtqueueFuzzing's input: a ring of 2**size_log2 at guest offsets 0 (desc), 272
    (avail), 544 (used), then the guest memory image with `chains` made available."""
    size = 1 << size_log2
    mem = bytearray(8192)
    base = 0x1_0000_0000
    d = 0
    heads = []
    for chain in chains:
        heads.append(d)
        for j, (addr, length, flags) in enumerate(chain):
            nxt = d + 1 if j + 1 < len(chain) else 0
            if flags & 1 and j + 1 == len(chain):
                nxt = heads[-1]                     # the last one points back: a loop
            struct.pack_into("<QIHH", mem, 16 * d, base + addr, length, flags, nxt)
            d += 1
    struct.pack_into("<HH", mem, 272, 0, len(heads))
    for k, h in enumerate(heads):
        struct.pack_into("<H", mem, 276 + 2 * k, h)
    return bytes([size_log2, 0, 1, 2, features, 0, 0, 8]) + bytes(mem)

seeds = {
    "fuzz-spec": [s.encode() for s in [
        "tap0", "tap0,netns=vm1", "vmnet1,mtu=9000,mac=52:54:00:12:34:56,up=off,offload=off,vnet=on,hdrlen=10",
        "stream,listen=unix:/run/vm1.sock", "stream,connect=tcp:[::1]:5555,vnet=on,reconnect=10",
        "stream,connect=tcp:127.0.0.1:5555,reconnect=5", "dgram,local=udp:127.0.0.1:6001,remote=udp:127.0.0.1:6000",
        "dgram,remote=udp:239.255.77.1:47001", "dgram,local=unix:/tmp/vfkit-net.sock,vfkit=on",
        "slirp,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp::5353-:53",
        "user,net=10.0.3.0/24,host=10.0.3.2,dhcpstart=10.0.3.15,dns=10.0.3.3,ipv6=on,ipv6-prefix=fd00::/64,restrict=on,mtu=1500,helper=off",
        "slirp,hostfwd=tcp::8080-:80;udp::5353-10.0.2.15:53", "netmap:em0", "vale0:1", "x,type=tap,netns=a,,b"]],
    "fuzz-stream": [
        b"\x00\x00" + struct.pack("!I", len(seg[0])) + seg[0] + struct.pack("!I", len(arp)) + arp,
        b"\x09\x03" + struct.pack("!I", len(dhcp)) + dhcp,
        b"\x01\x00" + struct.pack("!I", 12 + len(seg[1])) + vnet() + seg[1],
        b"\x0c\x00" + struct.pack("!I", 65553) + seg[0],
        b"\x00\x00" + struct.pack("!I", 0),
        b"\x0e\x3f" + struct.pack("!I", 60) + b"\0" * 60,
    ],
    "fuzz-seqpacket": [
        bytes([n]) + b"".join(struct.pack("!H", len(h + f)) + h + f for h, f in msgs)
        for n, msgs in [(0, [(vnet(), seg[0]), (vnet(), arp)]), (1, [partial(seg[1]), gso(superframe, 1448)]),
                        (2, [gso(superframe6, 1000, True), (vnet(), dhcp)]), (0, [gso(superframe, 1448), (b"O", b"\0" * 8)])]],
    "fuzz-slirp-input": [b"\x00" + arp, b"\x00" + dhcp, b"\x01" + vnet() + syn] +
        [b"\x01" + h + f for h, f in [partial(seg[0]), gso(superframe, 1448), gso(superframe6, 1000, True), partial(seg6[0], True)]],
    "fuzz-virtio-net": [h + f for h, f in [partial(seg[0]), gso(superframe, 1448), (vnet(flags=2), arp),
                                           (vnet(gso=0x81, gso_size=1448), seg[2]), partial(seg6[1], True)]],
    "fuzz-offload": [struct.pack("<H", size) + b"".join(struct.pack("!H", len(f)) + f for f in frames)
                     for size, frames in [(100, seg), (64, seg6), (1448, acks + seg), (1448, [superframe]),
                                          (1000, [superframe6]), (536, [syn, arp, dhcp])]],
    "fuzz-virtqueue": [virtqueue(*c) for c in [
        (3, 0, [[(4096, 100, 0)]]),                                  # one readable buffer
        (3, 0, [[(4096, 60, 1), (8192, 40, 0)], [(12288, 1500, 2)]]),  # a chain, a writable buffer
        (3, 1, [[(4096, 32, 4)]]),                                    # an indirect table (its entries: zeros)
        (2, 2, [[(4096, 64, 1), (4096, 64, 1)]]),                     # a loop (NEXT back to itself)
    ]],
}

for target, inputs in seeds.items():
    os.makedirs(f"Corpus/{target}", exist_ok=True)
    for i, data in enumerate(inputs):
        with open(f"Corpus/{target}/seed-{i:02d}", "wb") as f:
            f.write(data)
