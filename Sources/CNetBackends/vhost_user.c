// SCM_RIGHTS reception for the vhost-user server (unix(7), cmsg(3)).
#define _GNU_SOURCE
#include "cnb_vhost_user.h"
#include <string.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

ssize_t cnb_vhost_recv(int fd, void *buf, size_t len, int *fds, int max_fds, int *nfds, int *truncated) {
    // Room for 16 descriptors: vhost-user sends at most 8 (one per memory region).
    union { char space[CMSG_SPACE(16 * sizeof(int))]; struct cmsghdr align; } control;
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.space;
    msg.msg_controllen = sizeof control.space;
    *nfds = 0;
    *truncated = 0;
    ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) return n;
    if (msg.msg_flags & MSG_CTRUNC) *truncated = 1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const unsigned char *data = CMSG_DATA(c);
        for (size_t i = 0; i < count; i++) {
            int got;
            memcpy(&got, data + i * sizeof(int), sizeof(int));
            if (*nfds < max_fds) {
                fds[(*nfds)++] = got;
            } else {
                close(got);
                *truncated = 1;
            }
        }
    }
    return n;
}

// SIGBUS guards (see cnb_vhost_user.h). Slots are claimed with a compare-and-swap and
// read by the handler with plain atomic loads: no lock, nothing the handler could wait on.
#define CNB_GUARD_SLOTS 256
static struct {
    uintptr_t base;     // 0: free; 1: being filled in
    size_t length;
    int faulted;
} cnb_guards[CNB_GUARD_SLOTS];
static struct sigaction cnb_previous_sigbus;
static pthread_once_t cnb_guard_once = PTHREAD_ONCE_INIT;
static int cnb_guard_installed;

static void cnb_sigbus(int sig, siginfo_t *info, void *context) {
    uintptr_t a = (uintptr_t)info->si_addr;
    for (int i = 0; i < CNB_GUARD_SLOTS; i++) {
        uintptr_t base = __atomic_load_n(&cnb_guards[i].base, __ATOMIC_ACQUIRE);
        size_t length = __atomic_load_n(&cnb_guards[i].length, __ATOMIC_RELAXED);
        if (base > 1 && a >= base && a - base < length) {
            int saved = errno;
            void *p = mmap((void *)base, length, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            errno = saved;
            if (p != MAP_FAILED) {
                __atomic_store_n(&cnb_guards[i].faulted, 1, __ATOMIC_RELEASE);
                return;   // the faulting access runs again, on zeros
            }
        }
    }
    // Not ours: back to what was there, and the access faults again under it.
    (void)sig; (void)context;
    sigaction(SIGBUS, &cnb_previous_sigbus, NULL);
}

static void cnb_guard_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = cnb_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    cnb_guard_installed = sigaction(SIGBUS, &sa, &cnb_previous_sigbus) == 0;
}

int cnb_sigbus_guard_add(void *base, size_t length) {
    pthread_once(&cnb_guard_once, cnb_guard_install);
    if (!cnb_guard_installed) return -1;
    for (int i = 0; i < CNB_GUARD_SLOTS; i++) {
        uintptr_t expected = 0;
        if (__atomic_compare_exchange_n(&cnb_guards[i].base, &expected, (uintptr_t)1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            __atomic_store_n(&cnb_guards[i].length, length, __ATOMIC_RELAXED);
            __atomic_store_n(&cnb_guards[i].faulted, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&cnb_guards[i].base, (uintptr_t)base, __ATOMIC_RELEASE);
            return i;
        }
    }
    errno = ENOSPC;
    return -1;
}

void cnb_sigbus_guard_remove(int slot) {
    if (slot < 0 || slot >= CNB_GUARD_SLOTS) return;
    __atomic_store_n(&cnb_guards[slot].base, (uintptr_t)0, __ATOMIC_RELEASE);
}

int cnb_sigbus_guard_faulted(int slot) {
    if (slot < 0 || slot >= CNB_GUARD_SLOTS) return 0;
    return __atomic_load_n(&cnb_guards[slot].faulted, __ATOMIC_ACQUIRE);
}
