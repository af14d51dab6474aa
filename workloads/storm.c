/*
 * The mmap storm: mmap 64 KiB, touch every page, munmap, in a loop. Used by
 * the overhead benchmark (cargo xtask bench-mmap) and the ring-buffer
 * overflow test. Prints "ready", then runs the storm once for each "go" line
 * on stdin, printing "ns_per_iter <N>" after each; any other line, or end of
 * input, ends it. Several runs in one process let a benchmark compare
 * tracers on the same process (on a VM, page-fault cost differs between
 * processes by more than the effect being measured).
 *
 *   storm ITERATIONS
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long iterations = argc > 1 ? atol(argv[1]) : 200000;
    printf("ready\n");
    fflush(stdout);
    char line[16];
    while (fgets(line, sizeof line, stdin) && strcmp(line, "go\n") == 0) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (long i = 0; i < iterations; i++) {
            char *p = mmap(NULL, 64 * 1024, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) return 1;
            for (int off = 0; off < 64 * 1024; off += 4096) p[off] = 1;
            munmap(p, 64 * 1024);
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
        double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
        printf("ns_per_iter %.1f\n", ns / iterations);
        fflush(stdout);
    }
    return 0;
}
