//! Records of the diagnosis: verdict changes, deaths, and the large
//! mappings of an interval summed up.

use serde::{Deserialize, Serialize};

use super::{FlightRecording, Verdict, VerdictState};
use crate::core::container::ContainerRef;

/// A verdict that changed: about a process (`pid` set) or a group
/// (`pid` null, `cgroup_path` its key).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerdictChange {
    pub ts: f64,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub cgroup_path: String,
    pub cgroup_id: u64,
    #[serde(flatten)]
    pub container: Option<ContainerRef>,
    /// The state before this change.
    pub previous: VerdictState,
    pub verdict: Verdict,
}

/// Why a process died.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeathCause {
    /// V8 ran out of heap ("JavaScript heap out of memory") and aborted.
    V8Oom,
    /// The kernel's OOM killer chose it (the cgroup's limit, or the host's
    /// memory).
    OomKill,
    /// A signal ended it (`signal` names it).
    Signal,
}

impl DeathCause {
    pub fn name(self) -> &'static str {
        match self {
            DeathCause::V8Oom => "v8-oom",
            DeathCause::OomKill => "oom-kill",
            DeathCause::Signal => "signal",
        }
    }
}

/// Memory of a process at its death.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeathMemory {
    pub rss_anon_bytes: u64,
    pub rss_file_bytes: u64,
    pub rss_shmem_bytes: u64,
    pub vm_bytes: u64,
    /// `kernel`: read in the kernel at that moment (the V8 abort, the OOM
    /// kill, the signal's delivery); `last-sample`: the kernel could not,
    /// so the last interval's reading.
    pub source: MemorySource,
    /// V8's heap in use at its last GC (`Heap::SizeOfObjects`), and its
    /// limit, for V8 processes.
    pub js_heap_used_bytes: Option<u64>,
    pub v8_heap_limit_bytes: Option<u64>,
    pub v8_old_generation_limit_bytes: Option<u64>,
    /// The cgroup's usage and limit at its last reading.
    pub cgroup_usage_bytes: Option<u64>,
    pub cgroup_limit_bytes: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemorySource {
    Kernel,
    LastSample,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Death {
    pub ts: f64,
    pub pid: u32,
    pub comm: String,
    pub cause: DeathCause,
    /// The signal that ended it ("SIGKILL", "SIGABRT", ...), when known.
    pub signal: Option<String>,
    pub memory: DeathMemory,
    /// The last verdict before death.
    pub verdict: Option<Verdict>,
    /// Its top allocation sites at death, most live bytes first.
    pub allocation_sites: Vec<crate::core::sites::AllocationSite>,
    /// What `--on-leak` found in its JS heap before it died, if it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heap: Option<Box<crate::heap::HeapReport>>,
    /// One sentence: how it died and what memory did before.
    pub explanation: String,
    pub cgroup_path: String,
    pub cgroup_id: u64,
    #[serde(flatten)]
    pub container: Option<ContainerRef>,
    /// Where `--dump-dir` wrote its flight recording (null without
    /// `--dump-dir`, or if writing failed: then stderr says why).
    pub dump_path: Option<String>,
    /// The flight recorder's content, written to the dump file only.
    #[serde(skip)]
    pub flight: Option<Box<FlightRecording>>,
}

/// Large mappings of one process in one interval, summed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MappingsSummary {
    pub ts: f64,
    pub pid: u32,
    /// mmap and mremap calls at or above the threshold, and their bytes.
    pub mapped: u64,
    pub mapped_bytes: u64,
    pub unmapped: u64,
    pub unmapped_bytes: u64,
    /// The most common length among them.
    pub typical_len: u64,
    pub cgroup_id: u64,
}
