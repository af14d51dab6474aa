//! The metric families the agent serves, and their names and help texts.
//! docs/metrics.md lists every series; `promtool check metrics` lints them
//! in the agent's test.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use super::{GC_BUCKETS, Labels};

fn gc_histogram() -> Histogram {
    Histogram::new(GC_BUCKETS)
}

pub type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Families {
    pub gc_duration: Family<Labels, Histogram, fn() -> Histogram>,
    pub gc_reclaimed: Family<Labels, Counter>,
    pub heap_after_major: Family<Labels, Gauge>,
    pub heap_limit: Family<Labels, Gauge>,
    pub resident: Family<Labels, Gauge>,
    pub committed: Family<Labels, Gauge>,
    pub mapped: Family<Labels, Gauge>,
    pub brk: Family<Labels, Gauge>,
    pub growth: Family<Labels, FloatGauge>,
    pub processes: Family<Labels, Gauge>,
    pub large_allocations: Family<Labels, Counter>,
    pub oom_kills: Family<Labels, Counter>,
    pub deaths: Family<Labels, Counter>,
    pub verdict: Family<Labels, Gauge>,
    pub memory_growth: Family<Labels, FloatGauge>,
    pub time_to_limit: Family<Labels, FloatGauge>,
    pub cgroup_usage: Family<Labels, Gauge>,
    pub cgroup_limit: Family<Labels, Gauge>,
    pub cgroup_headroom: Family<Labels, Gauge>,
    pub events: Counter,
    pub dropped: Counter,
    pub attach_failures: Counter,
    pub traced: Gauge,
    pub cpu: Counter<f64, AtomicU64>,
    pub rss: Gauge,
}

impl Families {
    /// Every family, registered under its name in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let f = Self::new();
        f.register_in(registry);
        f
    }

    fn new() -> Self {
        Self {
            gc_duration: Family::new_with_constructor(gc_histogram),
            gc_reclaimed: Family::default(),
            heap_after_major: Family::default(),
            heap_limit: Family::default(),
            resident: Family::default(),
            committed: Family::default(),
            mapped: Family::default(),
            brk: Family::default(),
            growth: Family::default(),
            processes: Family::default(),
            large_allocations: Family::default(),
            oom_kills: Family::default(),
            deaths: Family::default(),
            verdict: Family::default(),
            memory_growth: Family::default(),
            time_to_limit: Family::default(),
            cgroup_usage: Family::default(),
            cgroup_limit: Family::default(),
            cgroup_headroom: Family::default(),
            events: Counter::default(),
            dropped: Counter::default(),
            attach_failures: Counter::default(),
            traced: Gauge::default(),
            cpu: Counter::default(),
            rss: Gauge::default(),
        }
    }

    /// The table of names and help texts.
    fn register_in(&self, registry: &mut Registry) {
        let f = self;
        registry.register(
            "nodejs_gc_duration_seconds",
            "V8 garbage-collection pauses by kind (minor, major), and main-thread GC work outside them \
             (incremental: marking steps; weakcb: weak callbacks)",
            f.gc_duration.clone(),
        );
        registry.register(
            "nodejs_gc_reclaimed_bytes",
            "Heap bytes freed by GC pauses, by kind",
            f.gc_reclaimed.clone(),
        );
        registry.register(
            "nodejs_heap_used_after_major_gc_bytes",
            "V8 heap used after the last major GC (summed over a group's processes)",
            f.heap_after_major.clone(),
        );
        registry.register(
            "nodejs_heap_size_limit_bytes",
            "V8's heap limit (heap_size_limit of v8.getHeapStatistics()), read from each process after its \
             first GC, summed over a group's processes",
            f.heap_limit.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of traced processes, by type (anon, file, shmem)",
            f.resident.clone(),
        );
        registry.register(
            "process_committed_bytes",
            "Bytes mapped through mmap/mremap that are not PROT_NONE",
            f.committed.clone(),
        );
        registry.register("process_mapped_bytes", "Bytes mapped through mmap/mremap", f.mapped.clone());
        registry.register("process_brk_bytes", "Size of the brk heap (malloc's main arena)", f.brk.clone());
        registry.register(
            "process_resident_memory_growth_bytes_per_second",
            "RSS growth since each process was first traced, over that time",
            f.growth.clone(),
        );
        registry.register("traced_processes", "Traced processes per group", f.processes.clone());
        registry.register(
            "large_allocations",
            "mmap and mremap calls at or above the large-mapping threshold",
            f.large_allocations.clone(),
        );
        registry.register(
            "oom_kills",
            "Traced processes killed for lack of memory, by source (kernel: the OOM killer)",
            f.oom_kills.clone(),
        );
        registry.register(
            "deaths",
            "Traced processes that died, by cause (v8-oom: V8 ran out of heap; oom-kill: the kernel's OOM \
             killer; signal: a fatal signal)",
            f.deaths.clone(),
        );
        registry.register(
            "memory_verdict",
            "The memory verdict, one series per state and memory: 1 for the current one, 0 for the others",
            f.verdict.clone(),
        );
        registry.register(
            "memory_growth_bytes_per_second",
            "Growth of the memory the verdict is about (the JS heap's floor after major GCs, or native \
             memory); absent without a fit",
            f.memory_growth.clone(),
        );
        registry.register(
            "time_to_limit_seconds",
            "Forecast: seconds until memory reaches the nearest limit at the verdict's slope; absent \
             while memory does not grow or no limit is known",
            f.time_to_limit.clone(),
        );
        registry.register(
            "container_memory_usage_bytes",
            "The cgroup's own memory accounting (memory.current, or v1 memory.usage_in_bytes)",
            f.cgroup_usage.clone(),
        );
        registry.register(
            "container_memory_limit_bytes",
            "The cgroup's memory limit (memory.max, or v1 memory.limit_in_bytes); absent when unlimited",
            f.cgroup_limit.clone(),
        );
        registry.register(
            "container_memory_headroom_bytes",
            "Memory limit minus usage",
            f.cgroup_headroom.clone(),
        );
        registry.register("events", "Kernel events decoded by the agent", f.events.clone());
        registry.register(
            "events_dropped",
            "Kernel events lost (ring buffer full) or undecodable",
            f.dropped.clone(),
        );
        registry.register(
            "probe_attach_failures",
            "Processes whose V8 GC probes could not be attached",
            f.attach_failures.clone(),
        );
        registry.register("agent_traced_processes", "Processes the agent traces now", f.traced.clone());
        registry.register("agent_cpu_seconds", "CPU time the agent has used", f.cpu.clone());
        registry.register("agent_resident_memory_bytes", "The agent's own resident memory", f.rss.clone());
    }
}
