// Preloaded after libMallocInterposerSwift.so into a process whose allocations we count.
//
// At load time (before main, so before any other thread exists) it blocks SIGUSR1, which
// every later thread inherits, starts one thread (all signals blocked) that waits for
// SIGUSR1 with sigwait, and enables the interposer's counting. On each SIGUSR1 that thread appends one line
//   mallocs=N bytes=N frees=N
// to the file named by NETBE_MALLOC_COUNT_FILE (stderr if unset). Reading in a normal
// thread rather than a signal handler keeps the interposer's mutex out of signal context.
// The snapshot path itself allocates nothing (snprintf of integers, write).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef void (*enable_fn)(void);
typedef void (*stats_fn)(int64_t *, int64_t *, int64_t *, int64_t *, int64_t *, int64_t *);

static stats_fn get_stats;
static int out_fd = 2;

static void *snapshot_thread(void *arg) {
    sigset_t *set = arg;
    for (;;) {
        int sig = 0;
        if (sigwait(set, &sig) != 0) continue;
        int64_t m = 0, mb = 0, ms = 0, ml = 0, f = 0, fb = 0;
        get_stats(&m, &mb, &ms, &ml, &f, &fb);
        char line[160];
        int n = snprintf(line, sizeof line, "mallocs=%lld bytes=%lld frees=%lld\n",
                         (long long)m, (long long)mb, (long long)f);
        if (n > 0) (void)!write(out_fd, line, (size_t)n);
    }
    return NULL;
}

__attribute__((constructor)) static void netbe_malloc_agent_start(void) {
    enable_fn enable = (enable_fn)dlsym(RTLD_DEFAULT, "malloc_interposer_enable");
    get_stats = (stats_fn)dlsym(RTLD_DEFAULT, "malloc_interposer_get_stats");
    if (!enable || !get_stats) {
        static const char msg[] = "netbe-malloc-agent: libMallocInterposerSwift.so is not preloaded before the agent\n";
        (void)!write(2, msg, sizeof msg - 1);
        return;
    }
    const char *path = getenv("NETBE_MALLOC_COUNT_FILE");
    if (path) {
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) out_fd = fd;
    }
    // The snapshot thread starts with every signal blocked, so a signal the program
    // means to take itself (netbe's SIGTERM through a signalfd) never lands there.
    static sigset_t set;
    sigset_t all, old;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    if (pthread_create(&t, NULL, snapshot_thread, &set) == 0) pthread_detach(t);
    sigaddset(&old, SIGUSR1);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    enable();
}
