// SCM_RIGHTS reception for the vhost-user server (unix(7), cmsg(3)).
#define _GNU_SOURCE
#include "cnb_vhost_user.h"
#include <string.h>
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
