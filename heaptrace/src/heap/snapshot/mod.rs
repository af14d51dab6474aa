//! Heap snapshot analysis, pure: a V8 heap snapshot (the JSON DevTools and
//! `v8.writeHeapSnapshot` write) in, DevTools' summary view out (objects by
//! class, with self and retained sizes), the diff of two snapshots of one
//! process, and the shortest strong path from a root to an instance.
//!
//! - `graph`: our own compact copy of the nodes and edges (for paths and
//!   ids), read and checked before anything indexes by them.
//! - `classes`: retained sizes and the grouping by class, from
//!   v8-heap-parser.
//! - `retainers`: [`retainer_path`].
//! - [`diff`], below.

mod classes;
mod graph;
mod growth;
mod retainers;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::OnceLock;

use super::report::ClassStats;
pub use super::report::is_user_class;
pub use retainers::{Retainers, retainer_path};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("heap snapshot is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("not a V8 heap snapshot: {0}")]
    Invalid(String),
    /// v8-heap-parser failed on a snapshot we had read and checked.
    #[error("heap snapshot analysis failed: {0}")]
    Analysis(String),
}

/// A parsed snapshot with its per-class figures. `Send`: built and analysed
/// on a blocking thread.
pub struct Snapshot {
    graph: graph::HeapGraph,
    /// By retained bytes, largest first.
    classes: Vec<ClassStats>,
    /// Each node's class, an index into `classes`.
    class_of: Vec<u32>,
    /// Each node's retained size.
    retained: Vec<u64>,
    by_name: HashMap<String, u32>,
    /// The node ids sorted, for "was this object in that snapshot" (diff,
    /// and retainer paths preferring new instances); built on first use.
    sorted_ids: OnceLock<Vec<u32>>,
}

// Analysis runs on a blocking thread: this must keep compiling.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Snapshot>();
};

impl Snapshot {
    /// Reads the snapshot twice: once into our arrays (which checks every
    /// index), then through v8-heap-parser for the sizes.
    pub fn parse(json: &[u8]) -> Result<Snapshot, SnapshotError> {
        let graph = graph::HeapGraph::parse(json)?;
        let figures = classes::compute(json, &graph)?;
        let by_name = figures.classes.iter().enumerate().map(|(i, c)| (c.name.clone(), i as u32)).collect();
        Ok(Snapshot {
            graph,
            classes: figures.classes,
            class_of: figures.class_of,
            retained: figures.retained,
            by_name,
            sorted_ids: OnceLock::new(),
        })
    }

    /// Every class, by retained bytes, largest first; deltas are None.
    pub fn classes(&self) -> &[ClassStats] {
        &self.classes
    }

    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    fn class_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).map(|&i| i as usize)
    }

    /// Whether an object with this id is in the snapshot. V8 keeps an
    /// object's id for its lifetime across the snapshots one isolate takes
    /// (its HeapObjectsMap), so a missing id means allocated since.
    fn has_id(&self, id: u32) -> bool {
        let ids = self.sorted_ids.get_or_init(|| {
            let mut ids = self.graph.node_ids().to_vec();
            ids.sort_unstable();
            ids
        });
        ids.binary_search(&id).is_ok()
    }
}

/// Every class of either snapshot with its deltas set: the application's
/// classes first, by what their new objects hold (a leak's objects hold the
/// most: an `Object` holding an array retains it, so it comes before the
/// `Array`), then V8's own kinds by self-bytes growth. Counts and sizes are the `after` snapshot's; a class only
/// `before` had is there with count 0.
pub fn diff(before: &Snapshot, after: &Snapshot) -> Vec<ClassStats> {
    let is_new: Vec<bool> =
        (0..after.node_count()).map(|node| !before.has_id(after.graph.node_id(node))).collect();
    let nested = growth::nested_in_new(after, &is_new);
    let mut new_counts = vec![0u64; after.classes.len()];
    let mut new_retained = vec![0u64; after.classes.len()];
    for node in (0..after.node_count()).filter(|&n| is_new[n]) {
        let class = after.class_of[node] as usize;
        if class < new_counts.len() {
            new_counts[class] += 1;
            if !nested[node] {
                new_retained[class] = new_retained[class].saturating_add(after.retained[node]);
            }
        }
    }
    let delta = |a: u64, b: u64| {
        i64::try_from(a).unwrap_or(i64::MAX).saturating_sub(i64::try_from(b).unwrap_or(i64::MAX))
    };
    let mut out: Vec<ClassStats> = after
        .classes
        .iter()
        .zip(new_counts.into_iter().zip(new_retained))
        .map(|(class, (new_count, new_retained_bytes))| {
            let (count, bytes) = before
                .class_index(&class.name)
                .map(|i| (before.classes[i].count, before.classes[i].self_bytes))
                .unwrap_or((0, 0));
            ClassStats {
                count_delta: Some(delta(class.count, count)),
                self_bytes_delta: Some(delta(class.self_bytes, bytes)),
                new_count: Some(new_count),
                new_retained_bytes: Some(new_retained_bytes),
                ..class.clone()
            }
        })
        .collect();
    for gone in before.classes.iter().filter(|c| after.class_index(&c.name).is_none()) {
        out.push(ClassStats {
            name: gone.name.clone(),
            count_delta: Some(delta(0, gone.count)),
            self_bytes_delta: Some(delta(0, gone.self_bytes)),
            new_count: Some(0),
            new_retained_bytes: Some(0),
            ..ClassStats::default()
        });
    }
    out.sort_by(|a, b| {
        b.is_user_class()
            .cmp(&a.is_user_class())
            .then_with(|| {
                if a.is_user_class() {
                    b.new_retained_bytes.cmp(&a.new_retained_bytes)
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .then(b.self_bytes_delta.cmp(&a.self_bytes_delta))
            .then(b.count_delta.cmp(&a.count_delta))
            .then(a.name.cmp(&b.name))
    });
    out
}
