/* bench/switch: frame generator and sink speaking vde_plug's stdin/stdout stream format
 * (each frame behind its length, 2 bytes big-endian; libvdeplug's vdestream), so that
 * vde_switch is measured with the same traffic as `netbe switch-traffic`.
 *   vdegen send SIZE SECONDS   frames to 02:00:00:00:00:02 on stdout
 *   vdegen recv SECONDS        announces 02:00:00:00:00:02, counts frames from stdin
 * Each prints "frames N bytes B seconds S" on stderr at the end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <poll.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

static int write_all(int fd, const unsigned char *p, size_t n) {
    while (n > 0) { ssize_t k = write(fd, p, n); if (k <= 0) return -1; p += k; n -= (size_t)k; }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: vdegen send SIZE SECONDS | recv SECONDS\n"); return 2; }
    unsigned char frame[2 + 1514] = {0};
    unsigned char sink[6] = {2, 0, 0, 0, 0, 2}, gen[6] = {2, 0, 0, 0, 0, 1};
    if (strcmp(argv[1], "send") == 0 && argc == 4) {
        int size = atoi(argv[2]);
        double seconds = atof(argv[3]);
        frame[0] = (unsigned char)(size >> 8); frame[1] = (unsigned char)size;
        memcpy(frame + 2, sink, 6); memcpy(frame + 8, gen, 6); frame[14] = 0x88; frame[15] = 0xb5;
        /* 64 frames per write, as a batch. */
        static unsigned char batch[64 * (2 + 1514)];
        for (int i = 0; i < 64; i++) memcpy(batch + i * (2 + size), frame, 2 + size);
        long frames = 0;
        double start = now(), end = start + seconds;
        while (now() < end) {
            if (write_all(1, batch, 64 * (size_t)(2 + size)) < 0) break;
            frames += 64;
        }
        fprintf(stderr, "frames %ld bytes %ld seconds %.3f\n", frames, frames * size, now() - start);
        return 0;
    }
    if (strcmp(argv[1], "recv") == 0) {
        double seconds = atof(argv[2]);
        memset(frame + 2, 0xff, 6); memcpy(frame + 8, sink, 6); frame[14] = 0x88; frame[15] = 0xb5;
        frame[0] = 0; frame[1] = 60;
        if (write_all(1, frame, 62) < 0) return 1;
        static unsigned char buf[1 << 20];
        size_t have = 0;
        long frames = 0, bytes = 0;
        double start = now(), end = start + seconds;
        struct pollfd p = { .fd = 0, .events = POLLIN };
        while (now() < end) {
            if (poll(&p, 1, 100) <= 0) continue;
            ssize_t k = read(0, buf + have, sizeof buf - have);
            if (k <= 0) break;
            have += (size_t)k;
            size_t at = 0;
            while (have - at >= 2) {
                size_t len = (size_t)buf[at] << 8 | buf[at + 1];
                if (have - at < 2 + len) break;
                frames++; bytes += (long)len; at += 2 + len;
            }
            memmove(buf, buf + at, have - at); have -= at;
        }
        fprintf(stderr, "frames %ld bytes %ld seconds %.3f\n", frames, bytes, now() - start);
        return 0;
    }
    return 2;
}
