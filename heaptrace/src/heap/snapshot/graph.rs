//! The snapshot's graph as compact arrays of our own: node types, names and
//! ids, and every edge with its type and name. v8-heap-parser computes the
//! sizes but keeps its graph behind `Rc` (not `Send`) and its edges private,
//! so retainer paths and the id-based diff need this second reading of the
//! same JSON. A few bytes per node and per edge: snapshots run to hundreds
//! of MB, and a `Vec<u64>` per field would triple what we hold.
//!
//! The format (V8's `HeapSnapshotJSONSerializer`): `snapshot.meta` names
//! the columns of the flat `nodes` and `edges` integer arrays; each node
//! owns the next `edge_count` edges, in node order; an edge's `to_node` is
//! the target's offset in `nodes` (its ordinal times the node row length).
//! Columns are found by name: Node 24 dropped `trace_node_id`, so positions
//! differ between versions.

mod read;

use std::ops::Range;

use super::SnapshotError;

/// Every string of the snapshot in one buffer: one allocation instead of a
/// `String` (24 bytes plus the allocator's) per string.
#[derive(Default)]
struct StringPool {
    text: String,
    /// Where each string ends in `text`; string i starts where i-1 ends.
    ends: Vec<usize>,
}

impl StringPool {
    fn get(&self, index: usize) -> Option<&str> {
        let end = *self.ends.get(index)?;
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        self.text.get(start..end)
    }
    fn len(&self) -> usize {
        self.ends.len()
    }
}

pub(super) struct HeapGraph {
    node_type: Vec<u8>,
    node_name: Vec<u32>,
    node_id: Vec<u32>,
    /// Node i's edges are `first_edge[i]..first_edge[i + 1]`.
    first_edge: Vec<u32>,
    edge_type: Vec<u8>,
    /// A string index (named edges) or an element index (element, hidden).
    edge_name: Vec<u32>,
    /// The target's node ordinal (not V8's offset into `nodes`).
    edge_to: Vec<u32>,
    node_types: Vec<String>,
    edge_types: Vec<String>,
    /// Per edge type (index as in `edge_types`): what the search needs to
    /// know, looked up instead of compared as strings on every edge.
    edge_kinds: Vec<EdgeKind>,
    strings: StringPool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum EdgeKind {
    /// Does not keep its target alive.
    Weak,
    /// A shortcut past a longer real path (the root's to the global object).
    Shortcut,
    /// `element` and `hidden`: numbered, not named.
    Indexed,
    /// V8's own fields (`map`, `table`), named.
    Internal,
    /// `property`, `context` (a closure variable) and anything else named.
    Named,
}

impl EdgeKind {
    fn of(type_name: &str) -> EdgeKind {
        match type_name {
            "weak" => EdgeKind::Weak,
            "shortcut" => EdgeKind::Shortcut,
            "element" | "hidden" => EdgeKind::Indexed,
            "internal" => EdgeKind::Internal,
            _ => EdgeKind::Named,
        }
    }
}

impl HeapGraph {
    /// Reads and checks the whole snapshot: every index in range, edge
    /// counts adding up, so that nothing later (ours or v8-heap-parser's
    /// indexing) can go out of bounds on a malformed file.
    pub(super) fn parse(json: &[u8]) -> Result<HeapGraph, SnapshotError> {
        read::parse(json)
    }

    pub(super) fn node_count(&self) -> usize {
        self.node_type.len()
    }
    #[cfg(test)]
    pub(super) fn edge_count(&self) -> usize {
        self.edge_to.len()
    }
    pub(super) fn node_id(&self, node: usize) -> u32 {
        self.node_id[node]
    }
    pub(super) fn node_ids(&self) -> &[u32] {
        &self.node_id
    }
    /// V8's type name: `object`, `closure`, `hidden`, `synthetic`, ...
    pub(super) fn node_type(&self, node: usize) -> &str {
        &self.node_types[usize::from(self.node_type[node])]
    }
    pub(super) fn node_name(&self, node: usize) -> &str {
        // In range: checked when read.
        self.strings.get(self.node_name[node] as usize).unwrap_or("")
    }
    pub(super) fn edges(&self, node: usize) -> Range<usize> {
        self.first_edge[node] as usize..self.first_edge[node + 1] as usize
    }
    /// The node that owns edge `edge` (the source of the reference).
    pub(super) fn edge_from(&self, edge: usize) -> usize {
        // The last node starting at or before `edge`: nodes without edges
        // share their start with the next one, which is the owner.
        self.first_edge.partition_point(|&start| start as usize <= edge).saturating_sub(1)
    }
    pub(super) fn edge_to(&self, edge: usize) -> usize {
        self.edge_to[edge] as usize
    }
    pub(super) fn edge_type(&self, edge: usize) -> &str {
        &self.edge_types[usize::from(self.edge_type[edge])]
    }
    pub(super) fn edge_kind(&self, edge: usize) -> EdgeKind {
        self.edge_kinds[usize::from(self.edge_type[edge])]
    }
    /// The raw `name_or_index`: an element index for indexed edges.
    pub(super) fn edge_index(&self, edge: usize) -> u32 {
        self.edge_name[edge]
    }
    /// The name of a named edge (checked in range when read); "" for an
    /// indexed one.
    pub(super) fn edge_name(&self, edge: usize) -> &str {
        if self.edge_kind(edge) == EdgeKind::Indexed {
            return "";
        }
        self.strings.get(self.edge_name[edge] as usize).unwrap_or("")
    }
}
