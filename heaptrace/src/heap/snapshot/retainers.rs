//! Why an object is alive: the shortest chain of strong references from a
//! root to it (DevTools' retainers view, llnode's `v8 findrefs`).

use super::Snapshot;
use super::graph::{EdgeKind, HeapGraph};
use crate::heap::report::{PathStep, RetainerPath};

/// Not reached (yet) by the search.
const UNSEEN: u32 = u32::MAX;
/// The synthetic root itself, where every path starts.
const START: u32 = u32::MAX - 1;
/// How many of the instance's property names its description lists.
const INSTANCE_PROPERTIES: usize = 4;

/// The shortest strong path from a root to one instance of `class`; with
/// `not_in`, preferring an instance that snapshot did not have (a new one).
///
/// Which instance: a new one if `not_in` is given and any is alive (one
/// that no other new object holds first), then
/// the one retaining the most (a class's retained bytes are mostly its few
/// big instances: the array holding a leak, not the thousand small objects
/// nearer the roots), then the nearest. Its path goes through the user's
/// roots (the root's non-synthetic children: the global object) if it can,
/// else through V8's and Node's own (`(GC roots)` and its `(Stack roots)`,
/// `(Global handles)`, ...). None if the class is not in the snapshot or
/// no instance is strongly reachable.
pub fn retainer_path(snapshot: &Snapshot, class: &str, not_in: Option<&Snapshot>) -> Option<RetainerPath> {
    Retainers::new(snapshot, not_in).path(class)
}

/// [`retainer_path`] for several classes of one snapshot: the search from
/// the roots and, with a diff, which new objects other new ones hold, are
/// computed once (each is a pass over the whole graph).
pub struct Retainers<'a> {
    snapshot: &'a Snapshot,
    not_in: Option<&'a Snapshot>,
    reached: Reached,
    /// With a diff: a new object that another new one holds is part of that
    /// one's growth (see `growth`); its own path says less.
    nested: Option<Vec<bool>>,
}

impl<'a> Retainers<'a> {
    pub fn new(snapshot: &'a Snapshot, not_in: Option<&'a Snapshot>) -> Self {
        let graph = &snapshot.graph;
        let nested = not_in.map(|old| {
            let is_new: Vec<bool> = (0..graph.node_count()).map(|n| !old.has_id(graph.node_id(n))).collect();
            super::growth::nested_in_new(snapshot, &is_new)
        });
        Self { snapshot, not_in, reached: search(graph), nested }
    }

    pub fn path(&self, class: &str) -> Option<RetainerPath> {
        let snapshot = self.snapshot;
        let class_index = snapshot.class_index(class)? as u32;
        let graph = &snapshot.graph;
        let mut best: Option<((bool, bool), u64, usize)> = None;
        // `reached.order` is in search order, so the first of equals is the
        // nearest (and through the user's roots if any is).
        for &node in &self.reached.order {
            let node = node as usize;
            if snapshot.class_of[node] != class_index {
                continue;
            }
            let new = self.not_in.is_some_and(|old| !old.has_id(graph.node_id(node)));
            let own_growth = new && !self.nested.as_ref().is_some_and(|n| n[node]);
            let key = ((own_growth, new), snapshot.retained[node]);
            if best.is_none_or(|(n, r, _)| key > (n, r)) {
                best = Some((key.0, key.1, node));
            }
        }
        let (_, _, target) = best?;
        Some(RetainerPath {
            class: class.to_string(),
            instance: describe_instance(graph, target),
            path: path_to(graph, &self.reached.via, target),
        })
    }
}

struct Reached {
    /// The edge each node was first reached by (`UNSEEN`, `START`).
    via: Vec<u32>,
    /// Nodes in the order reached: by distance, user roots' first.
    order: Vec<u32>,
}

/// Breadth-first from the root over strong references, in two rounds: from
/// the user's roots first, then from the rest of the root's children for
/// whatever the first did not reach. Weak edges do not keep anything alive.
/// Shortcut edges are skipped except from the root, as DevTools' distances
/// do: they duplicate a longer real path (the root's shortcut to the global
/// object is how the user's roots hang off it).
fn search(graph: &HeapGraph) -> Reached {
    let n = graph.node_count();
    let mut via = vec![UNSEEN; n];
    let mut order = Vec::with_capacity(n);
    via[0] = START;
    let mut head = 0;
    for user_round in [true, false] {
        for edge in graph.edges(0) {
            let to = graph.edge_to(edge);
            if graph.edge_kind(edge) == EdgeKind::Weak || via[to] != UNSEEN {
                continue;
            }
            if user_round && graph.node_type(to) == "synthetic" {
                continue;
            }
            via[to] = edge as u32;
            order.push(to as u32);
        }
        while head < order.len() {
            let node = order[head] as usize;
            head += 1;
            for edge in graph.edges(node) {
                let to = graph.edge_to(edge);
                if via[to] != UNSEEN || matches!(graph.edge_kind(edge), EdgeKind::Weak | EdgeKind::Shortcut) {
                    continue;
                }
                via[to] = edge as u32;
                order.push(to as u32);
            }
        }
    }
    Reached { via, order }
}

/// The steps from the root's child down to `target`, the root left out.
fn path_to(graph: &HeapGraph, via: &[u32], target: usize) -> Vec<PathStep> {
    let mut steps = Vec::new();
    let mut node = target;
    // At most one step per node: a guard, as `via` forms a tree by
    // construction.
    while steps.len() < graph.node_count() {
        let edge = match via.get(node) {
            Some(&e) if e != START && e != UNSEEN => e as usize,
            _ => break,
        };
        steps.push(PathStep {
            edge: edge_label(graph, edge),
            edge_type: graph.edge_type(edge).to_string(),
            node: node_label(graph, node),
        });
        node = graph.edge_from(edge);
    }
    steps.reverse();
    steps
}

/// How the holder refers to the object: `leaks`, `[3]`, `(table)`.
fn edge_label(graph: &HeapGraph, edge: usize) -> String {
    if graph.edge_kind(edge) == EdgeKind::Indexed {
        return format!("[{}]", graph.edge_index(edge));
    }
    let name = graph.edge_name(edge);
    match graph.edge_kind(edge) {
        // Numbered although named: hash table slots (internal), stack and
        // handle slots, the root's shortcut to the global object ("2").
        // They read better as elements.
        _ if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) => format!("[{name}]"),
        // An ephemeron: V8 names the key's (and the table's) reference to
        // the value after both, with ids, over a hundred characters.
        EdgeKind::Internal if name.contains(" pair in WeakMap (table @") => "(WeakMap value)".into(),
        // V8's names for its own fields (`map`, `table`, `context`), in
        // parentheses, so they do not read as the program's properties.
        EdgeKind::Internal => format!("({name})"),
        _ => name.to_string(),
    }
}

/// What the object is, as DevTools lists it: the constructor name for
/// objects (`Map`, `HeaptraceX`, V8's `system / Context`), the function name
/// and `()` for closures, the root's own names for synthetic nodes, the
/// type for strings and numbers (whose name is their content: the
/// program's data, not what it is).
fn node_label(graph: &HeapGraph, node: usize) -> String {
    // V8 names the global object "global / " followed by the page's URL,
    // which node has none of.
    let name = graph.node_name(node);
    let name = name.strip_suffix(" / ").unwrap_or(name);
    match graph.node_type(node) {
        "closure" if name.is_empty() => "(anonymous)()".into(),
        "closure" => format!("{name}()"),
        "object" | "native" | "synthetic" | "hidden" | "array" | "code" | "object shape"
            if !name.is_empty() =>
        {
            name.to_string()
        }
        "hidden" => "(system)".into(),
        "code" => "(compiled code)".into(),
        other => format!("({other})"),
    }
}

/// The instance and its first property names: `Object { name, arr }`.
fn describe_instance(graph: &HeapGraph, node: usize) -> String {
    let label = node_label(graph, node);
    let mut props: Vec<&str> = Vec::new();
    for edge in graph.edges(node) {
        if props.len() == INSTANCE_PROPERTIES {
            break;
        }
        if graph.edge_type(edge) != "property" {
            continue;
        }
        let name = graph.edge_name(edge);
        // Every object's `__proto__` says nothing about this one.
        if name != "__proto__" && !props.contains(&name) {
            props.push(name);
        }
    }
    if props.is_empty() { label } else { format!("{label} {{ {} }}", props.join(", ")) }
}
