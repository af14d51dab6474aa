/*
 * Empty functions under V8's mangled names (V8 >= 12.4 signatures), called
 * in the order of one garbage collection, in a loop. heaptrace finds and
 * probes them as it would in node, so timing the loop traced and untraced
 * measures the GC probes' cost per GC, without the noise of real GC work.
 * Used by `cargo xtask bench-gc`.
 *
 * Prints "ready", runs once per "go" line: "ns_per_gc <N>".
 *   fake-v8 GCS
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROBED __attribute__((noinline, used))

PROBED void collect_garbage(void *heap, int space, int reason, int flags)
    __asm__("_ZN2v88internal4Heap14CollectGarbageENS0_15AllocationSpaceENS0_23GarbageCollectionReasonENS_15GCCallbackFlagsE");
PROBED void start_pause(void *tracer, long start_us)
    __asm__("_ZN2v88internal8GCTracer20StartObservablePauseENS_4base9TimeTicksE");
PROBED void stop_pause(void *tracer, int collector, long end_us)
    __asm__("_ZN2v88internal8GCTracer19StopObservablePauseENS0_16GarbageCollectorENS_4base9TimeTicksE");
PROBED unsigned long size_of_objects(void *heap) __asm__("_ZN2v88internal4Heap13SizeOfObjectsEv");

static volatile long sink;
void collect_garbage(void *heap, int space, int reason, int flags) { sink += reason; }
void start_pause(void *tracer, long start_us) { sink += start_us; }
void stop_pause(void *tracer, int collector, long end_us) { sink += end_us; }
unsigned long size_of_objects(void *heap) { return 1 << 20; }

int main(int argc, char **argv) {
    long gcs = argc > 1 ? atol(argv[1]) : 20000;
    printf("ready\n");
    fflush(stdout);
    char line[16];
    while (fgets(line, sizeof line, stdin) && strcmp(line, "go\n") == 0) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (long i = 0; i < gcs; i++) {
            collect_garbage(0, 0, 1, 0);
            start_pause(0, i);
            sink += size_of_objects(0);
            sink += size_of_objects(0);
            stop_pause(0, 0, i + 1);
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
        printf("ns_per_gc %.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / gcs);
        fflush(stdout);
    }
    return 0;
}
