#define _GNU_SOURCE
#include "CNetBackends.h"

#include <errno.h>
#include <linux/if.h>
#include <linux/if_arp.h>
#include <linux/if_tun.h>
#include <string.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

const unsigned long cnb_TUNSETIFF = TUNSETIFF;
const unsigned long cnb_TUNGETIFF = TUNGETIFF;
const unsigned long cnb_TUNGETFEATURES = TUNGETFEATURES;
const unsigned long cnb_TUNSETVNETHDRSZ = TUNSETVNETHDRSZ;
const unsigned long cnb_TUNGETVNETHDRSZ = TUNGETVNETHDRSZ;
const unsigned long cnb_TUNSETOFFLOAD = TUNSETOFFLOAD;
const unsigned long cnb_TUNSETPERSIST = TUNSETPERSIST;
const unsigned long cnb_TUNSETCARRIER = TUNSETCARRIER;

const int cnb_IFF_TAP = IFF_TAP;
const int cnb_IFF_NO_PI = IFF_NO_PI;
const int cnb_IFF_VNET_HDR = IFF_VNET_HDR;
const int cnb_IFF_MULTI_QUEUE = IFF_MULTI_QUEUE;

const unsigned int cnb_TUN_F_CSUM = TUN_F_CSUM;
const unsigned int cnb_TUN_F_TSO4 = TUN_F_TSO4;
const unsigned int cnb_TUN_F_TSO6 = TUN_F_TSO6;
const unsigned int cnb_TUN_F_TSO_ECN = TUN_F_TSO_ECN;
const unsigned int cnb_TUN_F_UFO = TUN_F_UFO;
#ifdef TUN_F_USO4
const unsigned int cnb_TUN_F_USO4 = TUN_F_USO4;
const unsigned int cnb_TUN_F_USO6 = TUN_F_USO6;
#else  // older uapi headers: values from Linux 6.2's if_tun.h
const unsigned int cnb_TUN_F_USO4 = 0x20;
const unsigned int cnb_TUN_F_USO6 = 0x40;
#endif

const int cnb_IFNAMSIZ = IFNAMSIZ;
const int cnb_MSG_NOSIGNAL = MSG_NOSIGNAL;
const int cnb_MSG_DONTWAIT = MSG_DONTWAIT;
const int cnb_MSG_PEEK = MSG_PEEK;
const int cnb_MSG_TRUNC = MSG_TRUNC;
const int cnb_SOCK_STREAM = SOCK_STREAM;
const int cnb_SOCK_DGRAM = SOCK_DGRAM;
const int cnb_SOCK_SEQPACKET = SOCK_SEQPACKET;
const int cnb_SOCK_CLOEXEC = SOCK_CLOEXEC;
const int cnb_SOCK_NONBLOCK = SOCK_NONBLOCK;

int cnb_set_parent_death_signal(int sig) { return prctl(PR_SET_PDEATHSIG, (unsigned long)sig, 0UL, 0UL, 0UL); }
int cnb_get_parent_death_signal(void) {
    int sig = 0;
    if (prctl(PR_GET_PDEATHSIG, (unsigned long)&sig, 0UL, 0UL, 0UL) < 0) return -1;
    return sig;
}

#ifndef P_PIDFD
#define P_PIDFD 3
#endif
int cnb_pidfd_open(int pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }
int cnb_pidfd_send_signal(int pidfd, int sig) { return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0); }
int cnb_pidfd_wait(int pidfd, int nohang, int *status) {
    siginfo_t info;
    memset(&info, 0, sizeof info);
    int r;
    do { r = waitid((idtype_t)P_PIDFD, (id_t)pidfd, &info, WEXITED | (nohang ? WNOHANG : 0)); } while (r < 0 && errno == EINTR);
    if (r < 0) return -1;
    if (info.si_pid == 0) return 0;
    *status = info.si_code == CLD_EXITED ? (info.si_status & 0xff) << 8 : (info.si_status & 0x7f);
    return 1;
}

_Static_assert(sizeof(struct cnb_mmsghdr) == sizeof(struct mmsghdr), "mmsghdr size");
_Static_assert(__builtin_offsetof(struct cnb_mmsghdr, msg_len) == __builtin_offsetof(struct mmsghdr, msg_len), "mmsghdr msg_len");
int cnb_sendmmsg(int fd, struct cnb_mmsghdr *v, unsigned int n, int flags) { return (int)syscall(SYS_sendmmsg, fd, v, n, flags); }
int cnb_recvmmsg(int fd, struct cnb_mmsghdr *v, unsigned int n, int flags) { return (int)syscall(SYS_recvmmsg, fd, v, n, flags, (void *)0); }

int cnb_setns(int fd, int nstype) { return setns(fd, nstype); }
const int cnb_CLONE_NEWNET = CLONE_NEWNET;

_Static_assert(IFNAMSIZ == 16, "ifreq name size");

int cnb_ioctl_ptr(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }

int cnb_ioctl_ulong(int fd, unsigned long request, unsigned long arg) { return ioctl(fd, request, arg); }

static void ifr_init(struct ifreq *ifr, const char *name) {
    memset(ifr, 0, sizeof *ifr);
    strncpy(ifr->ifr_name, name, IFNAMSIZ - 1);
}

int cnb_tun_set_iff(int fd, const char *name, int flags, char *out_name) {
    struct ifreq ifr;
    ifr_init(&ifr, name);
    ifr.ifr_flags = (short)flags;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) return -1;
    memcpy(out_name, ifr.ifr_name, IFNAMSIZ);
    out_name[IFNAMSIZ - 1] = 0;
    return 0;
}

int cnb_if_set_mtu(int sock, const char *name, int mtu) {
    struct ifreq ifr;
    ifr_init(&ifr, name);
    ifr.ifr_mtu = mtu;
    return ioctl(sock, SIOCSIFMTU, &ifr);
}

int cnb_if_get_mtu(int sock, const char *name, int *mtu) {
    struct ifreq ifr;
    ifr_init(&ifr, name);
    if (ioctl(sock, SIOCGIFMTU, &ifr) < 0) return -1;
    *mtu = ifr.ifr_mtu;
    return 0;
}

int cnb_if_set_up(int sock, const char *name, int up) {
    struct ifreq ifr;
    ifr_init(&ifr, name);
    if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0) return -1;
    if (up) ifr.ifr_flags |= IFF_UP; else ifr.ifr_flags &= ~IFF_UP;
    return ioctl(sock, SIOCSIFFLAGS, &ifr);
}

int cnb_if_set_mac(int sock, const char *name, const uint8_t mac[6]) {
    struct ifreq ifr;
    ifr_init(&ifr, name);
    ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    memcpy(ifr.ifr_hwaddr.sa_data, mac, 6);
    return ioctl(sock, SIOCSIFHWADDR, &ifr);
}

int cnb_if_get_mac(int sock, const char *name, uint8_t mac[6]) {
    struct ifreq ifr;
    ifr_init(&ifr, name);
    if (ioctl(sock, SIOCGIFHWADDR, &ifr) < 0) return -1;
    memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
    return 0;
}
