// netmap's user ABI, NETMAP_API 14, and the shared-memory helpers its rings need.
//
// Declared here from the numbers of netmap's published headers, sys/net/netmap.h and
// sys/net/netmap_user.h (luigirizzo/netmap, also FreeBSD's sys/net): sizes, offsets and
// constants only; the declarations are ours. netmap.c pins every size and offset with
// _Static_assert (x86-64 / LP64 figures: nmreq_header 88, nmreq_register 56, netmap_slot 16,
// netmap_ring header 256, netmap_if ring_ofs at 56).
#ifndef CNB_NETMAP_H
#define CNB_NETMAP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

// netmap.h: NETMAP_API (14), NETMAP_REQ_IFNAMSIZ (64), NETMAP_MAX_FRAGS (64).
#define cnb_NETMAP_API 14
#define cnb_NETMAP_REQ_IFNAMSIZ 64
#define cnb_NETMAP_MAX_FRAGS 64

// Request types of NIOCCTRL (netmap.h, enum starting at NETMAP_REQ_REGISTER = 1).
#define cnb_NETMAP_REQ_REGISTER 1
#define cnb_NETMAP_REQ_PORT_INFO_GET 2
#define cnb_NETMAP_REQ_PORT_HDR_SET 6
#define cnb_NETMAP_REQ_PORT_HDR_GET 7

// nmreq_register.nr_mode (NR_REG_*) and nr_flags (NR_*) values used here.
#define cnb_NR_REG_ALL_NIC 1
#define cnb_NR_REG_ONE_NIC 4
#define cnb_NR_NO_TX_POLL 0x20000ULL

// netmap_slot.flags: NS_MOREFRAG on every slot of a frame but its last; the top byte
// (NS_PORT_MASK) picks a VALE destination port on TX.
#define cnb_NS_BUF_CHANGED 0x0001
#define cnb_NS_MOREFRAG 0x0020
#define cnb_NS_PORT_MASK 0xff00

// ioctl numbers: NIOCCTRL = _IOWR('i', 151, struct nmreq_header), NIOCTXSYNC = _IO('i', 148),
// NIOCRXSYNC = _IO('i', 149). netmap.c checks them against <sys/ioctl.h>'s macros.
extern const unsigned long cnb_NIOCCTRL;
extern const unsigned long cnb_NIOCTXSYNC;
extern const unsigned long cnb_NIOCRXSYNC;

// struct nmreq_header: every NIOCCTRL request. nr_options and nr_body carry user pointers.
struct cnb_nmreq_header {
    uint16_t nr_version;   // cnb_NETMAP_API
    uint16_t nr_reqtype;   // cnb_NETMAP_REQ_*
    uint32_t nr_reserved;  // 0
    char nr_name[cnb_NETMAP_REQ_IFNAMSIZ];
    uint64_t nr_options;   // first nmreq_option, 0 for none
    uint64_t nr_body;      // the request's body (struct cnb_nmreq_register, ...)
};

// struct nmreq_register: NETMAP_REQ_REGISTER's body; the kernel fills the ring geometry
// and where the port's netmap_if lies (nr_offset) in the nr_memsize bytes to mmap.
struct cnb_nmreq_register {
    uint64_t nr_offset;
    uint64_t nr_memsize;
    uint32_t nr_tx_slots;
    uint32_t nr_rx_slots;
    uint16_t nr_tx_rings;
    uint16_t nr_rx_rings;
    uint16_t nr_host_tx_rings;
    uint16_t nr_host_rx_rings;
    uint16_t nr_mem_id;
    uint16_t nr_ringid;
    uint32_t nr_mode;
    uint32_t nr_extra_bufs;
    uint64_t nr_flags;
};

// struct nmreq_port_hdr: PORT_HDR_SET/GET's body, a VALE port's virtio-net header length
// (0, 10 or 12).
struct cnb_nmreq_port_hdr {
    uint32_t nr_hdr_len;
    uint32_t pad1;
};

// struct netmap_slot: one buffer of a ring.
struct cnb_netmap_slot {
    uint32_t buf_idx;  // buffer i lies at ring + buf_ofs + i * nr_buf_size
    uint16_t len;      // bytes of this fragment
    uint16_t flags;    // cnb_NS_*
    uint64_t ptr;      // indirect buffers / offsets; unused here
};

// struct netmap_ring: the 256-byte header in front of num_slots slots. The fields netmap
// marks const are set by the side that lays out the memory; head and cur belong to the
// user side, tail to the kernel side (or, in shared memory, the side playing it).
struct cnb_netmap_ring {
    int64_t buf_ofs;
    uint32_t num_slots;
    uint32_t nr_buf_size;
    uint16_t ringid;
    uint16_t dir;  // 0 TX, 1 RX
    uint32_t head;
    uint32_t cur;
    uint32_t tail;
    uint32_t flags;
    int64_t ts_sec;   // struct timeval ts on LP64
    int64_t ts_usec;
    uint64_t offset_mask;
    uint64_t buf_align;
    uint8_t sem[128] __attribute__((aligned(128)));  // NM_CACHE_ALIGN
    // struct netmap_slot slot[num_slots] follows at cnb_netmap_ring_slots_offset.
};

// struct netmap_if: one per registered descriptor; ring_ofs[] (ssize_t, relative to the
// netmap_if) lists NIC TX rings, host TX rings, NIC RX rings, host RX rings, in that order.
struct cnb_netmap_if {
    char ni_name[16];  // IFNAMSIZ
    uint32_t ni_version;
    uint32_t ni_flags;
    uint32_t ni_tx_rings;
    uint32_t ni_rx_rings;
    uint32_t ni_bufs_head;
    uint32_t ni_host_tx_rings;
    uint32_t ni_host_rx_rings;
    uint32_t ni_spare1[3];
    // int64_t ring_ofs[] follows at cnb_netmap_if_ring_ofs_offset.
};

// Offsets for Swift, which reads these structures at addresses it does not own.
enum {
    cnb_netmap_ring_buf_ofs_offset = offsetof(struct cnb_netmap_ring, buf_ofs),
    cnb_netmap_ring_num_slots_offset = offsetof(struct cnb_netmap_ring, num_slots),
    cnb_netmap_ring_nr_buf_size_offset = offsetof(struct cnb_netmap_ring, nr_buf_size),
    cnb_netmap_ring_ringid_offset = offsetof(struct cnb_netmap_ring, ringid),
    cnb_netmap_ring_dir_offset = offsetof(struct cnb_netmap_ring, dir),
    cnb_netmap_ring_head_offset = offsetof(struct cnb_netmap_ring, head),
    cnb_netmap_ring_cur_offset = offsetof(struct cnb_netmap_ring, cur),
    cnb_netmap_ring_tail_offset = offsetof(struct cnb_netmap_ring, tail),
    cnb_netmap_ring_offset_mask_offset = offsetof(struct cnb_netmap_ring, offset_mask),
    cnb_netmap_ring_slots_offset = sizeof(struct cnb_netmap_ring),
    cnb_netmap_slot_size = sizeof(struct cnb_netmap_slot),
    cnb_netmap_if_tx_rings_offset = offsetof(struct cnb_netmap_if, ni_tx_rings),
    cnb_netmap_if_rx_rings_offset = offsetof(struct cnb_netmap_if, ni_rx_rings),
    cnb_netmap_if_host_tx_rings_offset = offsetof(struct cnb_netmap_if, ni_host_tx_rings),
    cnb_netmap_if_host_rx_rings_offset = offsetof(struct cnb_netmap_if, ni_host_rx_rings),
    cnb_netmap_if_ring_ofs_offset = sizeof(struct cnb_netmap_if),
    cnb_nmreq_header_size = sizeof(struct cnb_nmreq_header),
    cnb_nmreq_register_size = sizeof(struct cnb_nmreq_register),
};

// Shared ring indices: C11 acquire/release, because Swift's Atomic cannot be placed at an
// address inside an mmap. A load-acquire of the peer's index orders every later read of
// the slots it hands over; a store-release of ours publishes every slot written before.
static inline uint32_t cnb_atomic_load_acquire_u32(const uint32_t *p) {
    return atomic_load_explicit((const _Atomic uint32_t *)p, memory_order_acquire);
}
static inline void cnb_atomic_store_release_u32(uint32_t *p, uint32_t v) {
    atomic_store_explicit((_Atomic uint32_t *)p, v, memory_order_release);
}
// A slot's first eight bytes (buf_idx, len, flags) in one load that the compiler can
// neither split nor repeat: a peer's slot is read once, then validated.
static inline uint64_t cnb_atomic_load_relaxed_u64(const uint64_t *p) {
    return atomic_load_explicit((const _Atomic uint64_t *)p, memory_order_relaxed);
}

// memfd(2) and its seals (fcntl is variadic, memfd_create needs _GNU_SOURCE): the shared
// memory of rings between processes. seal_size forbids growing and shrinking (a peer that
// shrank the file would turn our next access into SIGBUS); size_is_sealed checks a
// received memfd.
int cnb_memfd_create(const char *name);
int cnb_memfd_seal_size(int fd);
int cnb_memfd_size_is_sealed(int fd);

#endif
