//! Everything the core learns, as plain data.
//!
//! Live tracing turns ring-buffer records, map reads and `/proc` reads into
//! these values; a recording is a sequence of them, and replaying it into a
//! [`super::Model`] reproduces the same output. So they are serde types with
//! no reference to aya, tokio or the file system.

use serde::{Deserialize, Serialize};

use super::sites::Frame;

/// One input to the model, in the order it happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input {
    /// A process was added to the traced set. Boxed: it is rare and large,
    /// and every event travels in this enum.
    Attach(Box<ProcessInfo>),
    /// A kernel event from the ring buffer.
    Event(Event),
    /// Periodic readings of one process.
    Sample(Sample),
    /// The kernel's running total of events lost to a full ring buffer, plus
    /// records userspace could not decode.
    Drops { ts_ns: u64, kernel: u64, undecodable: u64 },
    /// Memory figures of one cgroup (a container, a service), read each
    /// interval.
    Cgroup(CgroupSample),
    /// V8 GC probes now cover a process that was attached without them
    /// (a distribution's node, whose `libnode.so` was mapped late).
    GcProbesAttached { pid: u32, ts_ns: u64 },
    /// A user stack of a process, named: memory events carrying `id` were
    /// made from it. Sent once per stack, before the first event that uses
    /// it, so a recording holds every name it needs.
    Stack { pid: u32, id: u64, frames: Vec<Frame> },
    /// What `--on-leak` found in a process's JS heap (through its
    /// inspector). Boxed: rare and large.
    Heap(Box<crate::heap::HeapReport>),
    /// V8's heap limit of a process (`v8.getHeapStatistics().heap_size_limit`
    /// of its main isolate), read from the process itself.
    HeapLimit {
        pid: u32,
        ts_ns: u64,
        bytes: u64,
        /// The old generation's part of it (`--max-old-space-size`'s),
        /// where the JS heap's floor runs out.
        #[serde(default)]
        old_generation_bytes: Option<u64>,
    },
}

/// How memory syscalls are hooked in the kernel (see docs/architecture.md).
/// In records it reads as its description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemHook {
    /// A BTF tracepoint on `sys_exit` (`tp_btf`), the cheapest.
    BtfTracepoint,
    /// A raw tracepoint on `sys_exit`, for kernels without BTF.
    RawTracepoint,
    /// Classic `syscalls:sys_{enter,exit}_*` tracepoints.
    Tracepoint,
}

impl MemHook {
    pub fn description(self) -> &'static str {
        match self {
            MemHook::BtfTracepoint => "BTF tracepoint sys_exit",
            MemHook::RawTracepoint => "raw tracepoint sys_exit",
            MemHook::Tracepoint => {
                "classic tracepoints syscalls:sys_{enter,exit}_{mmap,munmap,mremap,brk,mprotect}"
            }
        }
    }
}

impl std::fmt::Display for MemHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.description())
    }
}

impl Serialize for MemHook {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.description())
    }
}

/// The inverse of [`MemHook::description`]: a recording's `start` record
/// reads back as it was written.
impl<'de> Deserialize<'de> for MemHook {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        [MemHook::BtfTracepoint, MemHook::RawTracepoint, MemHook::Tracepoint]
            .into_iter()
            .find(|hook| hook.description() == text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown memory hook {text:?}")))
    }
}

/// Which cgroup hierarchy a group's memory figures came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// `memory.current` and `memory.max`.
    V2,
    /// `memory.usage_in_bytes` and `memory.limit_in_bytes` (hybrid hosts).
    V1,
}

/// How a process came to be traced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Running when tracing started (named by pid or found by the selection).
    #[default]
    Start,
    /// Matched the selection when it called execve (or was traced and
    /// exec'd a new program).
    Exec,
    /// Forked by a process traced by selection.
    Fork,
}

/// One cgroup's memory accounting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupSample {
    pub ts_ns: u64,
    /// Path in the v2 hierarchy, as in `/proc/PID/cgroup` (the group key).
    pub cgroup_path: String,
    /// `memory.current` (v2) or `memory.usage_in_bytes` (v1).
    pub usage_bytes: u64,
    /// `memory.max` / `memory.limit_in_bytes`; None when unlimited.
    pub limit_bytes: Option<u64>,
    /// Where the figures came from.
    pub source: CgroupVersion,
}

/// A traced process as found at attach time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub comm: String,
    pub ts_ns: u64,
    /// Start of the brk heap (`start_brk`).
    pub start_brk: u64,
    /// The program break at attach (end of `[heap]`, or `start_brk`).
    pub brk: u64,
    /// mmap-managed mappings at attach (from `/proc/PID/maps`), without
    /// `[heap]`, `[stack]`, `[vdso]`, `[vvar]` and `[vsyscall]`.
    pub mappings: Vec<Mapping>,
    pub status: ProcStatus,
    /// Its cgroup in the v2 hierarchy (`0::` line of /proc/PID/cgroup).
    #[serde(default)]
    pub cgroup_path: Option<String>,
    /// Its pid inside its own (innermost) pid namespace.
    #[serde(default)]
    pub ns_pid: Option<u32>,
    /// Id of that cgroup (inode of its directory in the v2 hierarchy).
    #[serde(default)]
    pub cgroup_id: u64,
    /// Its container, as the edge resolved it (path shape plus any names a
    /// runtime or the kubelet's files gave). None: not in a container.
    #[serde(default)]
    pub container: Option<super::container::ContainerRef>,
    #[serde(default)]
    pub origin: Origin,
    /// Whether V8 GC probes cover it.
    #[serde(default)]
    pub gc_probes: bool,
    /// `--max-old-space-size` when given (command line or NODE_OPTIONS), in
    /// bytes. V8's whole heap limit is read later ([`Input::HeapLimit`]).
    #[serde(default)]
    pub max_old_space_bytes: Option<u64>,
}

/// One mapping, as listed in `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// `PROT_*` bits.
    pub prot: u32,
    pub shared: bool,
    /// Backed by a file (has an inode).
    pub file: bool,
}

/// Memory figures the kernel keeps per process (`/proc/PID/status`), bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcStatus {
    pub vm_size: u64,
    pub rss_anon: u64,
    pub rss_file: u64,
    pub rss_shmem: u64,
}

impl ProcStatus {
    pub fn rss(&self) -> u64 {
        self.rss_anon + self.rss_file + self.rss_shmem
    }
}

/// Per-process readings taken at each interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub pid: u32,
    pub ts_ns: u64,
    /// None once the process is gone (or a zombie without memory).
    pub status: Option<ProcStatus>,
    /// The kernel's call counters for this process.
    pub calls: CallCounts,
    /// GC work outside pauses (V8 processes with GC probes).
    #[serde(default)]
    pub gc_work: Option<GcWork>,
}

/// Call counters kept in the kernel (exact even when events are dropped).
/// Named `*_calls` on the wire, where records flatten them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCounts {
    #[serde(rename = "mmap_calls")]
    pub mmap: u64,
    #[serde(rename = "munmap_calls")]
    pub munmap: u64,
    #[serde(rename = "mremap_calls")]
    pub mremap: u64,
    #[serde(rename = "mprotect_calls")]
    pub mprotect: u64,
    #[serde(rename = "brk_calls")]
    pub brk: u64,
    /// Memory syscalls that returned an error.
    #[serde(rename = "failed_calls")]
    pub failed: u64,
}

/// A decoded kernel event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub pid: u32,
    pub tid: u32,
    pub ts_ns: u64,
    pub cgroup_id: u64,
    pub kind: EventKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// A memory syscall; `stack`: the key of the user stack taken at it
    /// (named by an earlier [`Input::Stack`]), if one was.
    Mem {
        op: MemOp,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stack: Option<u64>,
    },
    /// The process's last thread exited. The kernel's final counters come
    /// with it (the kernel untraces the process at that moment).
    Exit {
        #[serde(default)]
        calls: CallCounts,
        #[serde(default)]
        gc_work: GcWork,
        /// The process's exit status as `wait` reports it (`code << 8`, or
        /// the terminating signal in the low 7 bits), when the kernel gave it.
        #[serde(default)]
        exit_code: Option<i32>,
    },
    /// The process called execve. `traced`: it is in the traced set now;
    /// `was_traced`: it was before (its old image is gone); `undecided`:
    /// the selection depends on its cgroup, which userspace must judge.
    Exec { comm: String, traced: bool, was_traced: bool, undecided: bool },
    /// A traced process forked this (traced) child.
    Fork { parent_pid: u32, comm: String },
    /// The OOM killer chose this process.
    OomVictim { anon_rss: u64, file_rss: u64, shmem_rss: u64, total_vm: u64 },
    /// One V8 garbage-collection pause (event time = its start).
    Gc(GcPause),
    /// V8 ran out of heap and is aborting the process. `memory`: its
    /// memory read in the kernel at that moment (None if the kernel could
    /// not read it).
    V8OutOfMemory {
        #[serde(default)]
        memory: Option<ProcStatus>,
    },
    /// A signal whose action ends the process (its default action
    /// terminates or dumps core, or SIGKILL) is being delivered to it.
    /// `memory`: read in the kernel at delivery, before the process is torn
    /// down.
    FatalSignal {
        signal: u32,
        #[serde(default)]
        memory: Option<ProcStatus>,
    },
}

/// A V8 pause as the probes saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcPause {
    pub pause_ns: u64,
    /// `Heap::SizeOfObjects()` before and after; 0 if not seen.
    pub heap_before: u64,
    pub heap_after: u64,
    /// V8's `GarbageCollector`, if a probe reported it.
    pub collector: Option<u32>,
    /// V8's `GarbageCollectionReason`, if `Heap::CollectGarbage` was seen.
    pub reason: Option<u32>,
    /// Duration from V8's own timestamps (V8 >= 12.4).
    pub v8_timestamps: bool,
    /// Major GCs: the incremental-marking steps of the cycle it ends, their
    /// time, and the stall that started the cycle.
    pub marking_steps: u32,
    pub marking_step_ns: u64,
    pub marking_start_ns: u64,
    /// Address of V8's `Heap` object that collected (`this` of
    /// `Heap::CollectGarbage`), 0 if not seen: where V8's heap limit is
    /// read from.
    #[serde(default)]
    pub heap: u64,
}

/// GC work outside the pauses, totals since attach (counted in the kernel).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcWork {
    pub marking_steps: u64,
    pub marking_step_ns: u64,
    pub marking_starts: u64,
    pub marking_start_ns: u64,
    pub weak_callbacks: u64,
    pub weak_callback_ns: u64,
}

/// A successful memory syscall, with the values the kernel acted on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MemOp {
    Mmap { addr: u64, len: u64, prot: u32, flags: u32, fd: i32 },
    Munmap { addr: u64, len: u64 },
    Mremap { old_addr: u64, old_len: u64, new_addr: u64, new_len: u64, flags: u32 },
    Brk { brk: u64 },
    Mprotect { addr: u64, len: u64, prot: u32 },
}

/// `MAP_*` and `MREMAP_*` flag bits the core interprets.
pub mod map_flags {
    pub const SHARED: u32 = 0x01;
    pub const ANONYMOUS: u32 = 0x20;
    pub const MREMAP_DONTUNMAP: u32 = 0x04;
}
