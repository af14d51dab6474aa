/*
 * Empty functions under V8's mangled names (V8 >= 12.4 signatures), called
 * in the order of one garbage collection, in a loop. heaptrace finds and
 * probes them as it would in node, so timing the loop traced and untraced
 * measures the GC probes' cost per GC, without the noise of real GC work.
 * Used by `cargo xtask bench-gc`.
 *
 * Prints "ready"; for each "go" line runs GCS simulated GCs and prints
 * "ns_per_gc <N>"; for each "steps" line runs GCS incremental-marking steps
 * and prints "ns_per_step <N>".
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
PROBED void prologue_callbacks(void *heap, int type, int flags, int scope)
    __asm__("_ZN2v88internal4Heap23CallGCPrologueCallbacksENS_6GCTypeENS_15GCCallbackFlagsENS0_8GCTracer5Scope7ScopeIdE");
PROBED void epilogue_callbacks(void *heap, int type, int flags, int scope)
    __asm__("_ZN2v88internal4Heap23CallGCEpilogueCallbacksENS_6GCTypeENS_15GCCallbackFlagsENS0_8GCTracer5Scope7ScopeIdE");
PROBED void marking_step(void *marking, long max_duration, unsigned long max_bytes, int origin)
    __asm__("_ZN2v88internal18IncrementalMarking4StepENS_4base9TimeDeltaEmNS0_10StepOriginE");

static volatile long sink;
void collect_garbage(void *heap, int space, int reason, int flags) { sink += reason; }
void start_pause(void *tracer, long start_us) { sink += start_us; }
void stop_pause(void *tracer, int collector, long end_us) { sink += end_us; }
unsigned long size_of_objects(void *heap) { return 1 << 20; }
void prologue_callbacks(void *heap, int type, int flags, int scope) { sink += type; }
void epilogue_callbacks(void *heap, int type, int flags, int scope) { sink += type; }
void marking_step(void *marking, long max_duration, unsigned long max_bytes, int origin) { sink += origin; }

static double elapsed_ns(struct timespec a, struct timespec b) {
    return (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
}

int main(int argc, char **argv) {
    long gcs = argc > 1 ? atol(argv[1]) : 20000;
    printf("ready\n");
    fflush(stdout);
    char line[16];
    while (fgets(line, sizeof line, stdin)) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        if (strcmp(line, "go\n") == 0) {
            for (long i = 0; i < gcs; i++) {
                collect_garbage(0, 0, 1, 0);
                start_pause(0, i);
                prologue_callbacks(0, 1, 0, 0);
                sink += size_of_objects(0);
                sink += size_of_objects(0);
                epilogue_callbacks(0, 1, 0, 0);
                stop_pause(0, 0, i + 1);
            }
            clock_gettime(CLOCK_MONOTONIC, &b);
            printf("ns_per_gc %.1f\n", elapsed_ns(a, b) / gcs);
        } else if (strcmp(line, "steps\n") == 0) {
            for (long i = 0; i < gcs; i++) marking_step(0, 1000, 1 << 16, 0);
            clock_gettime(CLOCK_MONOTONIC, &b);
            printf("ns_per_step %.1f\n", elapsed_ns(a, b) / gcs);
        } else {
            break;
        }
        fflush(stdout);
    }
    return 0;
}
