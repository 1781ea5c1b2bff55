// What the vhost-user server needs that Swift cannot express: SCM_RIGHTS descriptors
// (CMSG_* macros), and the memory ordering a split virtqueue shared with a guest requires
// (virtio 1.2, 2.7.13 and 2.7.7.2: read the avail index before the entries it covers,
// publish used entries before the used index, a full barrier between publishing the used
// index or a notification hint and reading the other side's event index).
#ifndef CNB_VHOST_USER_H
#define CNB_VHOST_USER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

// recvmsg(MSG_DONTWAIT | MSG_CMSG_CLOEXEC) of up to `len` bytes; descriptors passed with
// SCM_RIGHTS are stored in fds (at most max_fds; any beyond are closed and *truncated set,
// as on MSG_CTRUNC). Returns recvmsg's result, errno set on -1.
ssize_t cnb_vhost_recv(int fd, void *buf, size_t len, int *fds, int max_fds, int *nfds, int *truncated);

static inline void cnb_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
static inline void cnb_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
static inline void cnb_fence_full(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// 16-bit ring indices and flags written by the other side at any time: loaded whole, once.
static inline uint16_t cnb_load_acquire_u16(const void *p) { return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE); }
static inline uint16_t cnb_load_relaxed_u16(const void *p) { return __atomic_load_n((const uint16_t *)p, __ATOMIC_RELAXED); }
static inline void cnb_store_release_u16(void *p, uint16_t v) { __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE); }
static inline void cnb_store_relaxed_u16(void *p, uint16_t v) { __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELAXED); }

// Guarding shared mappings a peer may truncate under us (a vhost-user frontend's guest
// memory): a SIGBUS inside a guarded range replaces the whole range with private zero
// pages (mmap MAP_FIXED|MAP_ANONYMOUS, async-signal-safe) and marks it faulted, so the
// access that faulted completes instead of killing the process; the owner sees the flag,
// drops what it read and closes the peer. A SIGBUS elsewhere goes to the disposition that
// was there before. Weston and wlroots guard client shm buffers the same way.
// add: a slot number (>= 0), or -1 when every slot is taken (errno ENOSPC) or the handler
// could not be installed. remove before munmap.
int cnb_sigbus_guard_add(void *base, size_t length);
void cnb_sigbus_guard_remove(int slot);
int cnb_sigbus_guard_faulted(int slot);

#endif
