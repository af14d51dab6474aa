/*
 * A process that makes cheap non-memory syscalls (getppid) in a loop: what a
 * busy neighbour on the host looks like to a syscall hook. The benchmark
 * runs it *untraced* while heaptrace traces something else, to measure what
 * heaptrace costs the rest of the host.
 *
 *   syscalls ITERATIONS   (prints "ns_per_call <N>")
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) syscall(SYS_getppid);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("ns_per_call %.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    return 0;
}
