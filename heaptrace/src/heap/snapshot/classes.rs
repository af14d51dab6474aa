//! Per-class figures from v8-heap-parser (its port of DevTools' dominator
//! tree and summary view), taken out of its `Graph` so the graph can be
//! dropped: it is `!Send` and several times the size of what we keep.

use std::collections::BTreeSet;
use std::panic::{self, AssertUnwindSafe};

use v8_heap_parser::ClassGroup;

use super::SnapshotError;
use super::graph::HeapGraph;
use crate::heap::report::ClassStats;

pub(super) struct Figures {
    /// By retained bytes, largest first.
    pub classes: Vec<ClassStats>,
    /// Each node's class, an index into `classes`.
    pub class_of: Vec<u32>,
    /// Each node's retained size (what freeing it alone would free).
    pub retained: Vec<u64>,
}

pub(super) fn compute(json: &[u8], graph: &HeapGraph) -> Result<Figures, SnapshotError> {
    // `graph` was read from the same bytes and checked (indices in range,
    // edge counts adding up, root first), which is what the crate indexes
    // by without checking. Its dominator code is DevTools' and has run on
    // every snapshot DevTools ever opened; a panic left in it on some input
    // we did not foresee must still not take down the caller (the tracer's
    // `--on-leak` runs this inside a long-lived process).
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let parsed = v8_heap_parser::decode_slice(json)
            .map_err(|e| SnapshotError::Invalid(format!("v8-heap-parser: {e}")))?;
        if parsed.nodes().len() != graph.node_count() {
            return Err(SnapshotError::Invalid(format!(
                "v8-heap-parser read {} nodes, we read {}",
                parsed.nodes().len(),
                graph.node_count()
            )));
        }
        let groups = parsed.get_class_groups(false);
        let mut classes: Vec<(ClassStats, &ClassGroup)> = groups
            .iter()
            .map(|g| {
                let name = parsed.get_node(g.index).map(|n| n.class_name()).unwrap_or("(unknown)");
                // V8 names the global object "global / " and the page's
                // URL, which node has none of.
                let name = name.strip_suffix(" / ").unwrap_or(name);
                let stats = ClassStats {
                    name: name.to_string(),
                    count: g.nodes.len() as u64,
                    self_bytes: g.self_size,
                    retained_bytes: g.retained_size,
                    ..ClassStats::default()
                };
                (stats, g)
            })
            .collect();
        for (stats, group) in &mut classes {
            if stats.name == "(unknown)" {
                stats.name = unknown_name(graph, &group.nodes);
            }
        }
        // The crate's groups come out of a HashMap: ties in a stable order.
        classes.sort_by(|(a, _), (b, _)| {
            b.retained_bytes
                .cmp(&a.retained_bytes)
                .then(b.self_bytes.cmp(&a.self_bytes))
                .then(a.name.cmp(&b.name))
        });
        let mut class_of = vec![u32::MAX; graph.node_count()];
        for (class, (_, group)) in classes.iter().enumerate() {
            for &node in &group.nodes {
                if let Some(slot) = class_of.get_mut(node) {
                    *slot = class as u32;
                }
            }
        }
        let retained = (0..graph.node_count()).map(|n| parsed.retained_size(n)).collect();
        let classes = classes.into_iter().map(|(stats, _)| stats).collect();
        Ok(Figures { classes, class_of, retained })
    }));
    match result {
        Ok(figures) => figures,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panicked".into());
            Err(SnapshotError::Analysis(message))
        }
    }
}

/// v8-heap-parser names every node type it does not know `(unknown)`: V8's
/// `symbol`, `object shape` (Node 20+: maps, descriptor arrays) and `wasm
/// object`, all in one group. DevTools calls them `(symbol)`, `(object
/// shape)`; the group is named after the types it holds. When it mixes
/// several the retained bytes cannot be split (the crate keeps its
/// dominator tree to itself), so the name lists them all.
fn unknown_name(graph: &HeapGraph, nodes: &[usize]) -> String {
    let types: BTreeSet<&str> = nodes
        .iter()
        .filter(|&&n| n < graph.node_count())
        .map(|&n| graph.node_type(n))
        .filter(|t| !matches!(*t, "object" | "native"))
        .collect();
    if types.is_empty() {
        return "(unknown)".into();
    }
    format!("({})", types.into_iter().collect::<Vec<_>>().join(", "))
}
