// libslirp from Debian's libslirp-dev (pkg-config "slirp"); see Package.swift.
#include <libslirp.h>

// prctl(2) is variadic and does not import into Swift: the slirp helper process asks
// the kernel to kill it when its parent (netbe's main process) dies.
#include <sys/prctl.h>
static inline int netbe_die_with_parent(int sig) {
    return prctl(PR_SET_PDEATHSIG, (unsigned long)sig, 0UL, 0UL, 0UL);
}

// sendmmsg(2)/recvmmsg(2) and struct mmsghdr are GNU extensions that Swift's Glibc
// module does not export (it is built without _GNU_SOURCE). The slirp helper's socket
// moves a batch of frames per call with them. The struct has the kernel's layout
// (include/linux/socket.h: struct mmsghdr); the calls go through syscall(2).
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
struct netbe_mmsghdr {
    struct msghdr msg_hdr;
    unsigned int msg_len;
};
static inline int netbe_sendmmsg(int fd, struct netbe_mmsghdr *v, unsigned int n, int flags) {
    return (int)syscall(SYS_sendmmsg, fd, v, n, flags);
}
static inline int netbe_recvmmsg(int fd, struct netbe_mmsghdr *v, unsigned int n, int flags) {
    return (int)syscall(SYS_recvmmsg, fd, v, n, flags, (void *)0);
}
