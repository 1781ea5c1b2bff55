// CNetBackends: the few things Swift cannot reach on its own.
// <linux/if.h> and <linux/if_tun.h> stay in shim.c: in a public header they clash
// with Glibc's <net/if.h> inside Swift's module, so the numbers are exported here.
#ifndef CNETBACKENDS_H
#define CNETBACKENDS_H

#include <stdint.h>
#include "cnb_netmap.h"
#include "cnb_vhost_user.h"

#ifdef __linux__
// Not part of Swift's Glibc module.
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#endif

// ioctl request numbers (built by _IOW/_IOR macros, which do not import).
extern const unsigned long cnb_TUNSETIFF;
extern const unsigned long cnb_TUNGETIFF;
extern const unsigned long cnb_TUNGETFEATURES;
extern const unsigned long cnb_TUNSETVNETHDRSZ;
extern const unsigned long cnb_TUNGETVNETHDRSZ;
extern const unsigned long cnb_TUNSETOFFLOAD;
extern const unsigned long cnb_TUNSETPERSIST;
extern const unsigned long cnb_TUNSETCARRIER;

// TUNSETIFF flags (linux/if_tun.h).
extern const int cnb_IFF_TAP;
extern const int cnb_IFF_NO_PI;
extern const int cnb_IFF_VNET_HDR;
extern const int cnb_IFF_MULTI_QUEUE;

// TUNSETOFFLOAD flags: what the reader of the tap fd accepts (linux/if_tun.h).
extern const unsigned int cnb_TUN_F_CSUM;
extern const unsigned int cnb_TUN_F_TSO4;
extern const unsigned int cnb_TUN_F_TSO6;
extern const unsigned int cnb_TUN_F_TSO_ECN;
extern const unsigned int cnb_TUN_F_UFO;
extern const unsigned int cnb_TUN_F_USO4;
extern const unsigned int cnb_TUN_F_USO6;

extern const int cnb_IFNAMSIZ;

// send(2)/recv(2) flags. Exported from here because whether Swift sees the <sys/socket.h>
// macros depends on which module first includes that header (a clean debug build failed
// on MSG_DONTWAIT while an incremental one passed).
extern const int cnb_MSG_NOSIGNAL;
extern const int cnb_MSG_DONTWAIT;
extern const int cnb_MSG_PEEK;
extern const int cnb_MSG_TRUNC;
extern const int cnb_SOCK_STREAM;
extern const int cnb_SOCK_DGRAM;
extern const int cnb_SOCK_SEQPACKET;
extern const int cnb_SOCK_CLOEXEC;
extern const int cnb_SOCK_NONBLOCK;

// prctl(2) is variadic: PR_SET_PDEATHSIG for a helper process that must die with its
// parent, and PR_GET_PDEATHSIG to check it survived a privilege drop.
int cnb_set_parent_death_signal(int sig);
int cnb_get_parent_death_signal(void);

// pidfds (pidfd_open(2), pidfd_send_signal(2), waitid(2) with P_PIDFD): a child process
// named by a descriptor that cannot come to mean another process once the pid is reused.
// Glibc 2.36 has no wrappers; these are raw syscalls.
int cnb_pidfd_open(int pid);
int cnb_pidfd_send_signal(int pidfd, int sig);
// A copy of another process's descriptor `fd` (pidfd_getfd(2); tests hold a socket open).
int cnb_pidfd_getfd(int pidfd, int fd);
// Reaps the child behind `pidfd`: 1 and a waitpid(2)-style status when it had exited,
// 0 while it runs (only with nohang), -1 with errno set (ECHILD: reaped already).
int cnb_pidfd_wait(int pidfd, int nohang, int *status);

// sendmmsg(2)/recvmmsg(2) and struct mmsghdr are GNU extensions that Swift's Glibc module
// does not export (it is built without _GNU_SOURCE). Same layout as the kernel's
// include/linux/socket.h struct mmsghdr; shim.c pins it with _Static_assert.
#include <sys/socket.h>
struct cnb_mmsghdr {
    struct msghdr msg_hdr;
    unsigned int msg_len;
};
int cnb_sendmmsg(int fd, struct cnb_mmsghdr *v, unsigned int n, int flags);
int cnb_recvmmsg(int fd, struct cnb_mmsghdr *v, unsigned int n, int flags);

// setns(2) needs _GNU_SOURCE, which Swift's Glibc module is not built with.
int cnb_setns(int fd, int nstype);
extern const int cnb_CLONE_NEWNET;

// Relaxed 64-bit loads and stores for counters that one thread writes and any thread
// reads (BackendStatistics): never torn, and visible to ThreadSanitizer as atomics.
static inline uint64_t cnb_relaxed_load_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void cnb_relaxed_store_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

// ioctl with a pointer or a by-value argument (ioctl(2) is variadic).
int cnb_ioctl_ptr(int fd, unsigned long request, void *arg);
int cnb_ioctl_ulong(int fd, unsigned long request, unsigned long arg);

// TUNSETIFF: name may be "" (kernel picks); the final name is copied to out_name
// (IFNAMSIZ bytes). Returns -1 with errno set on failure.
int cnb_tun_set_iff(int fd, const char *name, int flags, char *out_name);

// struct ifreq operations on an AF_INET/AF_PACKET control socket.
int cnb_if_set_mtu(int sock, const char *name, int mtu);
int cnb_if_get_mtu(int sock, const char *name, int *mtu);
int cnb_if_set_up(int sock, const char *name, int up);
int cnb_if_set_mac(int sock, const char *name, const uint8_t mac[6]);
int cnb_if_get_mac(int sock, const char *name, uint8_t mac[6]);

#endif
