//! What `heaptrace heap` found, as plain values: the text and JSON outputs,
//! the tracer's `--on-leak` and death dumps all take these.

use serde::{Deserialize, Serialize};

/// One constructor's objects in a snapshot (DevTools' summary view, llnode's
/// `v8 findjsobjects`), and with `--diff` what changed between two.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassStats {
    /// The constructor's name (`Object`, `Array`, a class name), or V8's
    /// name for objects that have none (`(string)`, `(closure)`, `(system)`).
    pub name: String,
    pub count: u64,
    /// The objects' own sizes added up.
    pub self_bytes: u64,
    /// What would be freed if every object of the class went away (from the
    /// dominator tree, counted once for nested instances as DevTools does).
    pub retained_bytes: u64,
    /// `--diff`: change in count since the first snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count_delta: Option<i64>,
    /// `--diff`: change in self bytes since the first snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_bytes_delta: Option<i64>,
    /// `--diff`: objects in the second snapshot that were not in the first
    /// (allocated in between and still alive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_count: Option<u64>,
    /// `--diff`: what the new objects of this class hold, their retained
    /// sizes added up. A leak's objects hold the most: this orders the diff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_retained_bytes: Option<u64>,
}

impl ClassStats {
    /// A class the application made (a constructor's name), not one of
    /// V8's own kinds of object (`(array)`, `(string)`, `system / Context`):
    /// the leak's fingerprint is told in these, V8's are listed apart.
    pub fn is_user_class(&self) -> bool {
        is_user_class(&self.name)
    }
}

pub fn is_user_class(name: &str) -> bool {
    // "Node / ..." are node's own C++ objects (its embedder graph), which
    // also get new ids in every snapshot.
    !name.is_empty()
        && !name.starts_with('(')
        && !name.starts_with("system /")
        && !name.starts_with("Node / ")
}

impl ClassStats {
    /// `--diff`: more objects, or more bytes, than in the first snapshot.
    pub fn grew(&self) -> bool {
        self.count_delta.unwrap_or(0) > 0 || self.self_bytes_delta.unwrap_or(0) > 0
    }
}

/// The shortest chain of strong references from a GC root to one instance
/// of a class: why it is still alive (llnode's `v8 findrefs`, DevTools'
/// retainers).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetainerPath {
    /// The class whose instance this is.
    pub class: String,
    /// The instance, with its first property names: `Object { name, arr }`.
    pub instance: String,
    /// From the root down to the instance (the last step reaches it).
    pub path: Vec<PathStep>,
}

/// One reference on a retainer path: the edge taken and the object it
/// reaches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathStep {
    /// How the holder refers to it: a property or variable name (`leaks`),
    /// an element (`[1289]`), or V8's internal name (`(table)`).
    pub edge: String,
    /// The V8 snapshot edge type: property, element, context, internal,
    /// hidden, shortcut.
    pub edge_type: String,
    /// The object reached: its class or function name (`Array`,
    /// `handler()`, `system / Context`).
    pub node: String,
}

/// One allocation site of the sampling heap profiler: memory allocated by
/// this function and still alive when sampling stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampledSite {
    /// `(anonymous)` for anonymous functions, as DevTools shows them.
    pub function: String,
    /// The script's URL or path; empty for V8 builtins.
    pub url: String,
    /// Where the function starts (V8's sampling profiler keeps functions,
    /// not allocating lines), 1-based as editors count; 0 if unknown.
    pub line: u32,
    pub column: u32,
    /// Sampled bytes still alive (V8 scales samples to estimate the total).
    pub live_bytes: u64,
    pub samples: u64,
    /// The callers, innermost first (`handler (app.js:12)`), at most 8.
    pub stack: Vec<String>,
}

/// What the command did to get its answer, said alongside it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// JS heap in use before the first snapshot (Runtime.getHeapUsage).
    pub heap_used_bytes: u64,
    /// How long each snapshot took, from the request to its last chunk:
    /// the process's JS thread is paused for about this long.
    pub snapshot_ms: Vec<f64>,
    /// Bytes of each snapshot as V8 streamed it.
    pub snapshot_bytes: Vec<u64>,
    /// Whether heaptrace opened the inspector (and closed it again), or
    /// found it already open and left it so.
    pub opened_inspector: bool,
    /// Files written with `--save` (mode 0600).
    pub saved: Vec<std::path::PathBuf>,
}

/// What was taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeapMode {
    /// One snapshot: classes by retained size.
    #[default]
    Summary,
    /// Two snapshots: what grew.
    Diff,
    /// The sampling heap profiler.
    Sample,
}

/// The answer of one `heaptrace heap` run (or one `--on-leak` action).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HeapReport {
    pub pid: u32,
    pub mode: HeapMode,
    /// `--diff`/`--sample`: the time between the two snapshots, or sampled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub over_seconds: Option<f64>,
    /// Largest first: by retained bytes (summary) or by self-bytes growth
    /// (diff). Empty for `sample`.
    pub classes: Vec<ClassStats>,
    /// For the top classes (grown ones with `--diff`).
    pub retainers: Vec<RetainerPath>,
    /// `--sample`: largest first.
    pub sites: Vec<SampledSite>,
    pub cost: Cost,
}
