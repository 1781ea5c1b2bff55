// netmap's ABI pinned (numbers from netmap's sys/net/netmap.h, NETMAP_API 14, x86-64),
// and the memfd calls for rings shared between processes.
#define _GNU_SOURCE
#include "cnb_netmap.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/time.h>

const unsigned long cnb_NIOCCTRL = _IOWR('i', 151, struct cnb_nmreq_header);
const unsigned long cnb_NIOCTXSYNC = _IO('i', 148);
const unsigned long cnb_NIOCRXSYNC = _IO('i', 149);

#define OFF(t, f) __builtin_offsetof(struct t, f)

// The request numbers as netmap's headers expand them on Linux x86-64.
_Static_assert(_IOWR('i', 151, struct cnb_nmreq_header) == 0xC0586997UL, "NIOCCTRL");
_Static_assert(_IO('i', 148) == 0x6994, "NIOCTXSYNC");
_Static_assert(_IO('i', 149) == 0x6995, "NIOCRXSYNC");

// struct nmreq_header: 88 bytes.
_Static_assert(sizeof(struct cnb_nmreq_header) == 88, "nmreq_header size");
_Static_assert(OFF(cnb_nmreq_header, nr_version) == 0, "nr_version");
_Static_assert(OFF(cnb_nmreq_header, nr_reqtype) == 2, "nr_reqtype");
_Static_assert(OFF(cnb_nmreq_header, nr_reserved) == 4, "nr_reserved");
_Static_assert(OFF(cnb_nmreq_header, nr_name) == 8, "nr_name");
_Static_assert(OFF(cnb_nmreq_header, nr_options) == 72, "nr_options");
_Static_assert(OFF(cnb_nmreq_header, nr_body) == 80, "nr_body");

// struct nmreq_register: 56 bytes.
_Static_assert(sizeof(struct cnb_nmreq_register) == 56, "nmreq_register size");
_Static_assert(OFF(cnb_nmreq_register, nr_offset) == 0, "nr_offset");
_Static_assert(OFF(cnb_nmreq_register, nr_memsize) == 8, "nr_memsize");
_Static_assert(OFF(cnb_nmreq_register, nr_tx_slots) == 16, "nr_tx_slots");
_Static_assert(OFF(cnb_nmreq_register, nr_rx_slots) == 20, "nr_rx_slots");
_Static_assert(OFF(cnb_nmreq_register, nr_tx_rings) == 24, "nr_tx_rings");
_Static_assert(OFF(cnb_nmreq_register, nr_rx_rings) == 26, "nr_rx_rings");
_Static_assert(OFF(cnb_nmreq_register, nr_host_tx_rings) == 28, "nr_host_tx_rings");
_Static_assert(OFF(cnb_nmreq_register, nr_host_rx_rings) == 30, "nr_host_rx_rings");
_Static_assert(OFF(cnb_nmreq_register, nr_mem_id) == 32, "nr_mem_id");
_Static_assert(OFF(cnb_nmreq_register, nr_ringid) == 34, "nr_ringid");
_Static_assert(OFF(cnb_nmreq_register, nr_mode) == 36, "nr_mode");
_Static_assert(OFF(cnb_nmreq_register, nr_extra_bufs) == 40, "nr_extra_bufs");
_Static_assert(OFF(cnb_nmreq_register, nr_flags) == 48, "nr_flags");

_Static_assert(sizeof(struct cnb_nmreq_port_hdr) == 8, "nmreq_port_hdr size");

// struct netmap_slot: 16 bytes; buf_idx, len and flags fit one 8-byte load.
_Static_assert(sizeof(struct cnb_netmap_slot) == 16, "netmap_slot size");
_Static_assert(OFF(cnb_netmap_slot, buf_idx) == 0, "buf_idx");
_Static_assert(OFF(cnb_netmap_slot, len) == 4, "len");
_Static_assert(OFF(cnb_netmap_slot, flags) == 6, "flags");
_Static_assert(OFF(cnb_netmap_slot, ptr) == 8, "ptr");

// struct netmap_ring: slots at 256 (the 128-byte sem aligned to NM_CACHE_ALIGN).
_Static_assert(OFF(cnb_netmap_ring, buf_ofs) == 0, "buf_ofs");
_Static_assert(OFF(cnb_netmap_ring, num_slots) == 8, "num_slots");
_Static_assert(OFF(cnb_netmap_ring, nr_buf_size) == 12, "nr_buf_size");
_Static_assert(OFF(cnb_netmap_ring, ringid) == 16, "ringid");
_Static_assert(OFF(cnb_netmap_ring, dir) == 18, "dir");
_Static_assert(OFF(cnb_netmap_ring, head) == 20, "head");
_Static_assert(OFF(cnb_netmap_ring, cur) == 24, "cur");
_Static_assert(OFF(cnb_netmap_ring, tail) == 28, "tail");
_Static_assert(OFF(cnb_netmap_ring, flags) == 32, "flags");
_Static_assert(OFF(cnb_netmap_ring, ts_sec) == 40 && sizeof(struct timeval) == 16, "ts");
_Static_assert(OFF(cnb_netmap_ring, offset_mask) == 56, "offset_mask");
_Static_assert(OFF(cnb_netmap_ring, buf_align) == 64, "buf_align");
_Static_assert(OFF(cnb_netmap_ring, sem) == 128, "sem");
_Static_assert(sizeof(struct cnb_netmap_ring) == 256, "netmap_ring header size");

// struct netmap_if: ring_ofs[] at 56.
_Static_assert(OFF(cnb_netmap_if, ni_version) == 16, "ni_version");
_Static_assert(OFF(cnb_netmap_if, ni_flags) == 20, "ni_flags");
_Static_assert(OFF(cnb_netmap_if, ni_tx_rings) == 24, "ni_tx_rings");
_Static_assert(OFF(cnb_netmap_if, ni_rx_rings) == 28, "ni_rx_rings");
_Static_assert(OFF(cnb_netmap_if, ni_bufs_head) == 32, "ni_bufs_head");
_Static_assert(OFF(cnb_netmap_if, ni_host_tx_rings) == 36, "ni_host_tx_rings");
_Static_assert(OFF(cnb_netmap_if, ni_host_rx_rings) == 40, "ni_host_rx_rings");
_Static_assert(sizeof(struct cnb_netmap_if) == 56, "netmap_if ring_ofs");

// Ring indices must be lock-free for two processes to share them.
_Static_assert(ATOMIC_INT_LOCK_FREE == 2 && ATOMIC_LLONG_LOCK_FREE == 2, "lock-free atomics");

int cnb_memfd_create(const char *name) { return memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING); }

int cnb_memfd_seal_size(int fd) { return fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL); }

int cnb_memfd_size_is_sealed(int fd) {
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0) return -1;
    return (seals & F_SEAL_SHRINK) != 0;
}
