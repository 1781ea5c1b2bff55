// libslirp from Debian's libslirp-dev (pkg-config "slirp"); see Package.swift.
#include <libslirp.h>

// prctl(2) is variadic and does not import into Swift: the slirp helper process asks
// the kernel to kill it when its parent (netbe's main process) dies.
#include <sys/prctl.h>
static inline int netbe_die_with_parent(int sig) {
    return prctl(PR_SET_PDEATHSIG, (unsigned long)sig, 0UL, 0UL, 0UL);
}
