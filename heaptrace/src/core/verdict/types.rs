//! The verdict as records carry it: plain data, serialized as the schema
//! (docs/json-output.md) describes.

use serde::{Deserialize, Serialize};

/// Leak or seesaw, in one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerdictState {
    /// Not enough evidence yet (too few GCs or samples, or still warming
    /// up after a spike).
    Unknown,
    /// Memory holds level: a healthy seesaw.
    Steady,
    /// Memory rises, but not (yet) with the evidence of a leak.
    Growing,
    /// Memory that is never given back rises steadily.
    Leak,
    /// Most of the time in GC and little reclaimed: V8's state before a
    /// "heap out of memory".
    GcThrashing,
}

impl VerdictState {
    pub fn name(self) -> &'static str {
        match self {
            VerdictState::Unknown => "unknown",
            VerdictState::Steady => "steady",
            VerdictState::Growing => "growing",
            VerdictState::Leak => "leak",
            VerdictState::GcThrashing => "gc-thrashing",
        }
    }
}

/// Which memory a verdict is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemoryKind {
    /// V8's heap of JS objects, judged by its floor after major GCs.
    JsHeap,
    /// Everything outside V8's heap pages: malloc (brk heap and arenas),
    /// Buffers and other external memory, addons.
    Native,
    Both,
}

impl MemoryKind {
    pub fn name(self) -> &'static str {
        match self {
            MemoryKind::JsHeap => "js-heap",
            MemoryKind::Native => "native",
            MemoryKind::Both => "both",
        }
    }
}

/// What a verdict rests on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BasisSource {
    /// Heap used right after each major GC (the floor of the seesaw).
    MajorGcs,
    /// Memory samples (one per second).
    Samples,
}

/// The evidence under a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Basis {
    pub source: BasisSource,
    /// Major GCs or samples in the window the slope was fitted on.
    pub points: u32,
    /// The time those points span, seconds.
    pub span_s: f64,
    /// Fit quality of the slope, 0 to 1: the share of the variance a
    /// straight line explains (R²).
    pub fit: f64,
}

/// The limit that ends the process first if the slope holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitKind {
    /// V8's heap limit (`heap_size_limit`): "JavaScript heap out of memory".
    V8Heap,
    /// The cgroup's memory limit: the kernel's OOM killer.
    Cgroup,
}

impl LimitKind {
    pub fn name(self) -> &'static str {
        match self {
            LimitKind::V8Heap => "v8-heap",
            LimitKind::Cgroup => "cgroup",
        }
    }
}

/// A process's or a group's verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub state: VerdictState,
    /// Which memory it concerns; None for `unknown`.
    pub memory: Option<MemoryKind>,
    /// Growth of that memory, bytes per second (the JS heap's floor, or
    /// native memory; their sum for `both`). None when there is no fit.
    pub slope_bytes_per_s: Option<f64>,
    pub basis: Option<Basis>,
    /// Seconds until the nearest limit at this slope; None when memory does
    /// not grow or no limit is known.
    pub time_to_limit_s: Option<f64>,
    pub limit: Option<LimitKind>,
    /// That limit, bytes.
    pub limit_bytes: Option<u64>,
    /// The verdict and its evidence in one sentence.
    pub evidence: String,
    /// The allocation site that took most of the growth, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<VerdictSite>,
}

/// Where a growing memory's bytes went (see `core::sites`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerdictSite {
    /// Its share of that memory's growth over the last one to two minutes.
    pub share: f64,
    /// The bytes it grew by in that time.
    pub bytes: u64,
    /// The frame that names it (its first JS frame, when it has one).
    pub frame: crate::core::sites::Frame,
}

impl Verdict {
    pub fn unknown(evidence: impl Into<String>) -> Self {
        Verdict {
            state: VerdictState::Unknown,
            memory: None,
            slope_bytes_per_s: None,
            basis: None,
            time_to_limit_s: None,
            limit: None,
            limit_bytes: None,
            evidence: evidence.into(),
            site: None,
        }
    }
}
