//! Which new objects are a growth of their own, for [`super::diff`]'s
//! ordering: a new object of the application's that another new one holds
//! (a leaked `{ name, arr }` holds its new `arr`) is part of its holder's
//! growth, and counting it again would put `Array` level with `Object`.
//! "Holds" looks through V8's own objects in between (an object's elements
//! or properties store, a Map's table), at most [`THROUGH`] of them.

use super::{Snapshot, graph::EdgeKind};

/// V8's own objects looked through between two of the application's.
const THROUGH: usize = 2;

/// Per node: new, of an application class, and held by another such new
/// object.
pub(super) fn nested_in_new(snapshot: &Snapshot, is_new: &[bool]) -> Vec<bool> {
    let graph = &snapshot.graph;
    let user = |node: usize| {
        snapshot.classes.get(snapshot.class_of[node] as usize).is_some_and(|c| c.is_user_class())
    };
    // V8's containers only: a backing store ("array") or an internal object
    // ("hidden"). Not code, shapes or strings, which many objects share.
    let container = |node: usize| matches!(graph.node_type(node), "array" | "hidden");
    let mut nested = vec![false; graph.node_count()];
    let mut frontier = Vec::new();
    for holder in (0..graph.node_count()).filter(|&n| is_new[n] && user(n)) {
        frontier.clear();
        frontier.push((holder, 0));
        while let Some((node, depth)) = frontier.pop() {
            for edge in graph.edges(node) {
                if matches!(graph.edge_kind(edge), EdgeKind::Weak | EdgeKind::Shortcut) {
                    continue;
                }
                let to = graph.edge_to(edge);
                if to == holder {
                    continue;
                }
                if user(to) {
                    nested[to] |= is_new[to];
                } else if depth < THROUGH && container(to) {
                    frontier.push((to, depth + 1));
                }
            }
        }
    }
    nested
}
