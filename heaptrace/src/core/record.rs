//! What the core reports. Each record is one JSON Lines object, tagged by
//! `type`; docs/json-output.md is the schema and must change with this file.

use serde::{Deserialize, Serialize};

use super::{
    container::ContainerRef,
    gc::{GcKind, PauseQuantiles},
    input::{CallCounts, CgroupVersion, MemHook, Origin},
};
mod diagnosis;

pub use diagnosis::*;

pub use super::{
    recorder::FlightRecording,
    verdict::{Basis, BasisSource, LimitKind, MemoryKind, Verdict, VerdictState},
};

/// The version of this schema, in the `start` record. docs/json-output.md
/// keeps the change log.
pub const SCHEMA_VERSION: u32 = 5;

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
    /// Per group (a container, or any other cgroup), per interval, before
    /// its processes' snapshots.
    Group(GroupSnapshot),
    /// A process's or a group's verdict changed.
    Verdict(VerdictChange),
    /// A traced process died: V8 ran out of heap, the kernel's OOM killer
    /// ended it, or a fatal signal did.
    Death(Death),
    /// The large mappings of one interval, per process, when they are not
    /// listed one by one (`mapping` records need `--events`).
    Mappings(MappingsSummary),
    Summary(Summary),
    /// What a process's JS heap holds (`heaptrace heap`, or the tracer's
    /// `--on-leak`): classes, their growth, retainers, sampled sites.
    Heap(crate::heap::HeapReport),
}

/// How tracing was set up; emitted once the programs are attached and the
/// processes running at start are traced. A recording keeps it as it was.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Started {
    pub ts: f64,
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The selection, as flags ("--comm node --pid 42").
    pub selection: String,
    /// Whether processes that start later are picked up.
    pub follows_new_processes: bool,
    /// Processes traced at start.
    pub processes: usize,
    pub mem_hook: MemHook,
}

/// A process joined the traced set.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Attached {
    pub ts: f64,
    pub pid: u32,
    pub comm: String,
    /// start (running when tracing began), exec or fork.
    pub origin: Origin,
    /// Whether V8 GC probes cover it.
    pub gc_probes: bool,
    pub cgroup_id: u64,
    #[serde(flatten)]
    pub container: Option<ContainerRef>,
    pub ns_pid: Option<u32>,
}

/// One group of processes sharing a cgroup: a container (then the
/// container fields are present), a pod's container, or any other cgroup
/// (a systemd service, a session).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupSnapshot {
    pub ts: f64,
    /// Path in the v2 hierarchy.
    pub cgroup_path: String,
    pub cgroup_id: u64,
    #[serde(flatten)]
    pub container: Option<ContainerRef>,
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
    /// Which hierarchy the figures came from.
    pub memory_source: Option<CgroupVersion>,
    pub gc_count: u64,
    pub gc_pause_ns: u64,
    /// The group's verdict (its processes' memory together, against the
    /// cgroup's limit).
    pub verdict: Verdict,
}

/// A group in the summary: its last snapshot plus pause quantiles over
/// all its processes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupSummary {
    #[serde(flatten)]
    pub snapshot: GroupSnapshot,
    pub minor: PauseQuantiles,
    pub major: PauseQuantiles,
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
    pub container: Option<ContainerRef>,
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
    /// V8's heap limit, read from the process (`heap_size_limit` of
    /// `v8.getHeapStatistics()`); null for processes without V8, and until
    /// its first GC.
    pub v8_heap_limit_bytes: Option<u64>,
    /// The old generation's part of it (what `--max-old-space-size` sets):
    /// where the JS heap's floor runs out and V8 aborts.
    pub v8_old_generation_limit_bytes: Option<u64>,
    /// Committed memory outside V8's heap chunks: the brk heap and
    /// anonymous private mappings that are not V8's (malloc, Buffers,
    /// addons, thread stacks).
    pub native_bytes: u64,
    pub verdict: Verdict,
}

/// Unit tests' starting point: every figure zero, the verdict unknown; a
/// test names only the fields it is about.
#[cfg(test)]
impl Snapshot {
    pub fn blank(pid: u32, comm: &str) -> Self {
        Snapshot {
            ts: 0.0,
            pid,
            comm: comm.into(),
            rss_bytes: 0,
            rss_anon_bytes: 0,
            rss_file_bytes: 0,
            rss_shmem_bytes: 0,
            vm_bytes: 0,
            mapped_bytes: 0,
            mapped_anon_bytes: 0,
            mapped_file_bytes: 0,
            committed_bytes: 0,
            brk_bytes: 0,
            calls: Default::default(),
            rss_growth_bytes: 0,
            rss_growth_bytes_per_s: 0.0,
            mapped_growth_bytes: 0,
            committed_growth_bytes: 0,
            brk_growth_bytes: 0,
            cgroup_id: 0,
            container: None,
            ns_pid: None,
            gc_count: 0,
            gc_pause_ns: 0,
            marking_steps: 0,
            marking_step_ns: 0,
            weak_callbacks: 0,
            weak_callback_ns: 0,
            heap_after_last_major_bytes: None,
            v8_heap_limit_bytes: None,
            v8_old_generation_limit_bytes: None,
            native_bytes: 0,
            verdict: Verdict::unknown(""),
        }
    }
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
    pub kind: GcKind,
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
    pub container: Option<ContainerRef>,
}

/// GC figures of one process, in the summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GcSummary {
    pub count: u64,
    pub minor: PauseQuantiles,
    pub major: PauseQuantiles,
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
    pub op: MappingOp,
    pub addr: u64,
    pub len: u64,
    /// Like /proc/PID/maps: "rw-p", "---p", "r--s".
    pub prot: String,
    pub flags: u32,
    /// mmap only (empty for munmap and mremap).
    #[serde(serialize_with = "empty_if_none")]
    pub backing: Option<Backing>,
    pub cgroup_id: u64,
    /// mmap with a stack: the allocation site, as its headline frame
    /// (`handler (app.js:17)`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// What backs a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backing {
    Anon,
    File,
}

impl Backing {
    pub fn name(self) -> &'static str {
        match self {
            Backing::Anon => "anon",
            Backing::File => "file",
        }
    }
}

/// `null`-free optional fields: an absent value is written as "".
fn empty_if_none<S: serde::Serializer, T: Serialize>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => v.serialize(s),
        None => s.serialize_str(""),
    }
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
    pub container: Option<ContainerRef>,
}

/// Which mapping syscall a `mapping` record is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MappingOp {
    Mmap,
    Munmap,
    Mremap,
}

impl MappingOp {
    pub fn name(self) -> &'static str {
        match self {
            MappingOp::Mmap => "mmap",
            MappingOp::Munmap => "munmap",
            MappingOp::Mremap => "mremap",
        }
    }
}

/// Who ended a process for lack of memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OomSource {
    /// The kernel's OOM killer chose it; the sizes are the kernel's, at the
    /// kill.
    Kernel,
    /// V8 ran out of heap ("JavaScript heap out of memory"); the sizes are
    /// the last sample's.
    V8,
}

impl OomSource {
    pub fn name(self) -> &'static str {
        match self {
            OomSource::Kernel => "kernel",
            OomSource::V8 => "v8",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Oom {
    pub ts: f64,
    pub pid: u32,
    pub comm: String,
    pub source: OomSource,
    pub anon_rss_bytes: u64,
    pub file_rss_bytes: u64,
    pub shmem_rss_bytes: u64,
    pub vm_bytes: u64,
    pub cgroup_id: u64,
    #[serde(flatten)]
    pub container: Option<ContainerRef>,
}

/// Why events were lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// The ring buffer was full when the kernel had an event to send.
    RingBufferFull,
    /// A record userspace could not decode.
    Undecodable,
}

impl DropReason {
    /// In words.
    pub fn words(self) -> &'static str {
        match self {
            DropReason::RingBufferFull => "ring buffer full",
            DropReason::Undecodable => "undecodable",
        }
    }
}

/// Events lost since the previous `dropped` record.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Dropped {
    pub ts: f64,
    /// Newly lost since the last report.
    pub count: u64,
    /// Lost since start.
    pub total: u64,
    pub reason: DropReason,
}

/// Counts of what the model holds, to show that state stays bounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSize {
    pub live_processes: usize,
    pub retired_kept: usize,
    pub groups: usize,
}

/// The last record.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub ts: f64,
    pub duration_s: f64,
    /// How memory syscalls were hooked (see `heaptrace --verbose`).
    pub mem_hook: MemHook,
    pub dropped_events: u64,
    /// Traced processes that exited (or exec'd out of the selection).
    pub exited_processes: u64,
    /// Exited processes whose summaries were let go (only the latest
    /// `RETIRED_KEPT` are listed); their groups still count them.
    pub processes_not_listed: u64,
    /// What the model held at the end (it stays bounded under churn).
    pub state: ModelSize,
    /// Per group, when grouping applies (containers, or host-wide and
    /// cgroup selections).
    pub groups: Vec<GroupSummary>,
    /// Live processes and the latest exited ones.
    pub processes: Vec<ProcessSummary>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcessSummary {
    pub pid: u32,
    pub comm: String,
    #[serde(flatten)]
    pub container: Option<ContainerRef>,
    pub ns_pid: Option<u32>,
    pub cgroup_id: u64,
    pub origin: Origin,
    pub traced_s: f64,
    pub exited: bool,
    /// V8 reported running out of heap ("JavaScript heap out of memory").
    pub v8_out_of_memory: bool,
    /// It exec'd another program (which, if selected, is listed anew).
    pub replaced_by_exec: bool,
    pub oom_killed: bool,
    /// How it died (null while alive, or after a normal exit).
    pub death: Option<DeathCause>,
    pub verdict: Verdict,
    pub v8_heap_limit_bytes: Option<u64>,
    pub v8_old_generation_limit_bytes: Option<u64>,
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
    /// Where its memory came from: every allocation site, most live bytes
    /// first (empty with `--no-stacks`).
    pub allocation_sites: Vec<crate::core::sites::AllocationSite>,
    /// Allocating calls whose stack was lost before it could be read.
    pub unnamed_stack_calls: u64,
    /// The answer first, in plain words: leak or not, which memory, how
    /// fast, which limit and when, how it died.
    pub answer: String,
    /// What its memory did, in figures.
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
    pub backing: Backing,
    pub shared: bool,
}
