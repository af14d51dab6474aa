//! What the core reports. Each record is one JSON Lines object, tagged by
//! `type`; docs/json-output.md is the schema and must change with this file.

use serde::Serialize;

use super::input::CallCounts;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// The first record: what is traced and how.
    Start(Started),
    Snapshot(Snapshot),
    Mapping(LargeMapping),
    Exit(Exit),
    Oom(Oom),
    Gc(Gc),
    Dropped(Dropped),
    /// A process joined the traced set.
    Attach(Attached),
    /// Per group (container or cgroup), per interval, before its processes'
    /// snapshots.
    Container(ContainerSnapshot),
    Summary(Summary),
}

/// How tracing was set up; emitted once the programs are attached and the
/// processes running at start are traced.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Started {
    pub ts: f64,
    /// The selection, as flags ("--comm node --pid 42").
    pub selection: String,
    /// Whether processes that start later are picked up.
    pub follows_new_processes: bool,
    /// Processes traced at start.
    pub processes: usize,
    pub mem_hook: String,
}

/// A process joined the traced set.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Attached {
    pub ts: f64,
    pub pid: u32,
    pub comm: String,
    /// start (running when tracing began), exec or fork.
    pub origin: crate::core::input::Origin,
    /// Whether V8 GC probes cover it.
    pub gc_probes: bool,
    pub cgroup_id: u64,
    #[serde(flatten)]
    pub container: Option<crate::core::container::ContainerRef>,
    pub ns_pid: Option<u32>,
}

/// One group of processes sharing a cgroup: a container (then the
/// container fields are present), or a service or session cgroup.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ContainerSnapshot {
    pub ts: f64,
    /// Path in the v2 hierarchy.
    pub cgroup_path: String,
    pub cgroup_id: u64,
    #[serde(flatten)]
    pub container: Option<crate::core::container::ContainerRef>,
    /// Live traced processes in it.
    pub processes: usize,
    /// Traced processes of it that have exited.
    pub exited_processes: u64,
    /// Sums over its live traced processes.
    pub rss_bytes: u64,
    pub rss_growth_bytes: i64,
    pub committed_growth_bytes: i64,
    /// The cgroup's own accounting (all its processes, page cache
    /// included): `memory.current` on v2, `memory.usage_in_bytes` on v1.
    pub memory_usage_bytes: Option<u64>,
    /// Since the first reading.
    pub memory_usage_growth_bytes: Option<i64>,
    /// None when unlimited.
    pub memory_limit_bytes: Option<u64>,
    /// Limit minus usage.
    pub memory_headroom_bytes: Option<u64>,
    /// "v2" or "v1".
    pub memory_source: Option<String>,
    pub gc_count: u64,
    pub gc_pause_ns: u64,
}

/// A group in the summary: its last snapshot plus pause quantiles over
/// all its processes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ContainerSummary {
    #[serde(flatten)]
    pub snapshot: ContainerSnapshot,
    pub minor: crate::core::gc::PauseQuantiles,
    pub major: crate::core::gc::PauseQuantiles,
}

/// Per process, per interval.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Snapshot {
    /// Unix time, seconds.
    pub ts: f64,
    pub pid: u32,
    pub comm: String,
    pub rss_bytes: u64,
    pub rss_anon_bytes: u64,
    pub rss_file_bytes: u64,
    pub rss_shmem_bytes: u64,
    /// VmSize.
    pub vm_bytes: u64,
    /// Live bytes mapped through mmap/mremap (not brk heap, not main stack).
    pub mapped_bytes: u64,
    pub mapped_anon_bytes: u64,
    pub mapped_file_bytes: u64,
    /// The part of `mapped_bytes` that is not PROT_NONE.
    pub committed_bytes: u64,
    pub brk_bytes: u64,
    /// `mmap_calls`, `munmap_calls`, ... since attach.
    #[serde(flatten)]
    pub calls: CallCounts,
    /// RSS now minus RSS at attach.
    pub rss_growth_bytes: i64,
    /// `rss_growth_bytes` over the time since attach.
    pub rss_growth_bytes_per_s: f64,
    pub mapped_growth_bytes: i64,
    pub committed_growth_bytes: i64,
    pub brk_growth_bytes: i64,
    /// Cgroup (v2) of the last event seen from this process; 0 before any.
    pub cgroup_id: u64,
    /// Its container, from its cgroup path (absent if not in one).
    #[serde(flatten)]
    pub container: Option<crate::core::container::ContainerRef>,
    /// The pid inside its own pid namespace (differs in containers).
    pub ns_pid: Option<u32>,
    /// V8 garbage-collection pauses since attach (0 if not a V8 process).
    pub gc_count: u64,
    /// Their total length.
    pub gc_pause_ns: u64,
    /// Main-thread GC work outside the pauses since attach (counted in the
    /// kernel): incremental-marking steps and weak-callback runs.
    pub marking_steps: u64,
    pub marking_step_ns: u64,
    pub weak_callbacks: u64,
    pub weak_callback_ns: u64,
    /// Heap used after the last major GC (null before one).
    pub heap_after_last_major_bytes: Option<u64>,
    /// `--max-old-space-size`, when the process was started with it.
    pub heap_limit_bytes: Option<u64>,
}

/// One V8 garbage-collection pause.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Gc {
    /// Start of the pause.
    pub ts: f64,
    pub pid: u32,
    /// The isolate's thread (workers have their own).
    pub tid: u32,
    /// `minor`, `major` (or `unknown`), as prom-client names them.
    pub kind: &'static str,
    /// V8's name: Scavenge, Mark-Compact, Minor Mark-Sweep, ...
    pub collector: &'static str,
    /// V8's GarbageCollectionReason, e.g. "allocation failure".
    pub reason: &'static str,
    pub pause_ns: u64,
    pub heap_before_bytes: u64,
    pub heap_after_bytes: u64,
    /// Major GCs: incremental-marking steps of the cycle this pause ends and
    /// their time (like `--trace-gc`'s "+ X ms in N steps"), and the stall
    /// that started the cycle. 0 for minor GCs.
    pub marking_steps: u32,
    pub marking_step_ns: u64,
    pub marking_start_ns: u64,
    pub cgroup_id: u64,
    #[serde(flatten)]
    pub container: Option<crate::core::container::ContainerRef>,
}

/// GC figures of one process, in the summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GcSummary {
    pub count: u64,
    pub minor: crate::core::gc::PauseQuantiles,
    pub major: crate::core::gc::PauseQuantiles,
    pub total_pause_ms: f64,
    /// Share of wall time spent in pauses (1 minus V8's mutator utilization).
    pub pause_time_share: f64,
    pub gcs_per_s: f64,
    pub heap_after_last_major_bytes: Option<u64>,
    pub reclaimed_bytes: u64,
    /// Main-thread GC work outside the pauses, which pause figures hide.
    pub marking_steps: u64,
    pub marking_step_ms: f64,
    /// `Heap::StartIncrementalMarking` stalls.
    pub marking_starts: u64,
    pub marking_start_ms: f64,
    pub weak_callbacks: u64,
    pub weak_callback_ms: f64,
    /// Pauses plus the work above, over wall time.
    pub main_thread_share: f64,
}

/// A mapping change at or above the large-mapping threshold.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LargeMapping {
    pub ts: f64,
    pub pid: u32,
    pub tid: u32,
    /// mmap, mremap or munmap.
    pub op: &'static str,
    pub addr: u64,
    pub len: u64,
    /// Like /proc/PID/maps: "rw-p", "---p", "r--s".
    pub prot: String,
    pub flags: u32,
    /// anon or file.
    pub backing: &'static str,
    pub cgroup_id: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Exit {
    pub ts: f64,
    pub pid: u32,
    pub comm: String,
    pub oom_killed: bool,
    pub traced_s: f64,
    pub cgroup_id: u64,
    #[serde(flatten)]
    pub container: Option<crate::core::container::ContainerRef>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Oom {
    pub ts: f64,
    pub pid: u32,
    pub comm: String,
    /// `kernel` (the OOM killer chose it; sizes from the kernel) or `v8`
    /// (V8 ran out of heap, "JavaScript heap out of memory"; sizes from the
    /// last sample).
    pub source: &'static str,
    pub anon_rss_bytes: u64,
    pub file_rss_bytes: u64,
    pub shmem_rss_bytes: u64,
    pub vm_bytes: u64,
    pub cgroup_id: u64,
    #[serde(flatten)]
    pub container: Option<crate::core::container::ContainerRef>,
}

/// Events lost since the previous `dropped` record.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Dropped {
    pub ts: f64,
    /// Newly lost since the last report.
    pub count: u64,
    /// Lost since start.
    pub total: u64,
    /// Why: "ring_buffer_full" or "undecodable".
    pub reason: &'static str,
}

/// The last record.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub ts: f64,
    pub duration_s: f64,
    /// How memory syscalls were hooked (see `heaptrace --verbose`).
    pub mem_hook: String,
    pub dropped_events: u64,
    /// Traced processes that exited (or exec'd out of the selection).
    pub exited_processes: u64,
    /// Exited processes whose summaries were let go (only the latest
    /// `RETIRED_KEPT` are listed); their groups still count them.
    pub processes_not_listed: u64,
    /// What the model held at the end (it stays bounded under churn).
    pub state: crate::core::model::ModelSize,
    /// Per group, when grouping applies (containers, or host-wide and
    /// cgroup selections).
    pub containers: Vec<ContainerSummary>,
    /// Live processes and the latest exited ones.
    pub processes: Vec<ProcessSummary>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcessSummary {
    pub pid: u32,
    pub comm: String,
    #[serde(flatten)]
    pub container: Option<crate::core::container::ContainerRef>,
    pub ns_pid: Option<u32>,
    pub cgroup_id: u64,
    pub origin: crate::core::input::Origin,
    pub traced_s: f64,
    pub exited: bool,
    /// V8 reported running out of heap ("JavaScript heap out of memory").
    pub v8_out_of_memory: bool,
    /// It exec'd another program (which, if selected, is listed anew).
    pub replaced_by_exec: bool,
    pub oom_killed: bool,
    pub rss_start_bytes: u64,
    pub rss_end_bytes: u64,
    pub rss_growth_bytes: i64,
    pub rss_growth_bytes_per_s: f64,
    pub rss_anon_growth_bytes: i64,
    pub rss_file_growth_bytes: i64,
    pub rss_shmem_growth_bytes: i64,
    pub mapped_growth_bytes: i64,
    pub mapped_anon_growth_bytes: i64,
    pub mapped_file_growth_bytes: i64,
    pub committed_growth_bytes: i64,
    pub brk_growth_bytes: i64,
    pub mapped_bytes: u64,
    pub committed_bytes: u64,
    pub brk_bytes: u64,
    #[serde(flatten)]
    pub calls: CallCounts,
    pub large_mappings: u64,
    /// Change in committed bytes per chunk-size class, largest change first.
    pub growth_by_chunk_size: Vec<ChunkClassGrowth>,
    pub largest_mappings: Vec<LiveMapping>,
    /// V8 garbage collection; absent for processes without GC probes.
    pub gc: Option<GcSummary>,
    /// One sentence a person can act on.
    pub finding: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChunkClassGrowth {
    /// Lower bound of the class: chunks of [size, 2*size).
    pub chunk_size_bytes: u64,
    pub chunks_delta: i64,
    pub committed_delta_bytes: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LiveMapping {
    pub addr: u64,
    pub len: u64,
    pub committed_bytes: u64,
    pub backing: &'static str,
    pub shared: bool,
}
