//! Hand-built snapshots: a graph small enough to work out its dominator
//! tree on paper (exact retained sizes, paths, diffs), and malformed input.

use serde_json::{Value, json};

use super::super::*;
use super::render;

const NODE_TYPES: [&str; 15] = [
    "hidden",
    "array",
    "string",
    "object",
    "code",
    "closure",
    "regexp",
    "number",
    "native",
    "synthetic",
    "concatenated string",
    "sliced string",
    "symbol",
    "bigint",
    "object shape",
];
const EDGE_TYPES: [&str; 7] = ["context", "element", "property", "internal", "hidden", "shortcut", "weak"];

/// One node: type, name, id, self size, and its edges as (type, name or
/// element index, target node ordinal).
type N<'a> = (&'a str, &'a str, u32, u64, Vec<(&'a str, Value, usize)>);

/// A snapshot as V8 22 writes it (same meta, field order, root first).
fn build(nodes: &[N]) -> Vec<u8> {
    v8_order(&document(nodes))
}

fn document(nodes: &[N]) -> Value {
    let mut strings: Vec<String> = Vec::new();
    let mut intern = |s: &str| match strings.iter().position(|x| x == s) {
        Some(i) => i as u64,
        None => {
            strings.push(s.to_string());
            (strings.len() - 1) as u64
        }
    };
    const NODE_FIELDS: u64 = 7;
    let (mut flat_nodes, mut flat_edges) = (Vec::new(), Vec::new());
    for (typ, name, id, size, edges) in nodes {
        let t = NODE_TYPES.iter().position(|x| x == typ).expect("node type") as u64;
        flat_nodes.extend([t, intern(name), u64::from(*id), *size, edges.len() as u64, 0, 0]);
        for (etype, name, to) in edges {
            let t = EDGE_TYPES.iter().position(|x| x == etype).expect("edge type") as u64;
            let name_or_index = match name {
                Value::String(s) => intern(s),
                other => other.as_u64().expect("an element index"),
            };
            flat_edges.extend([t, name_or_index, *to as u64 * NODE_FIELDS]);
        }
    }
    json!({
        "snapshot": {
            "meta": {
                "node_fields": ["type", "name", "id", "self_size", "edge_count", "trace_node_id", "detachedness"],
                "node_types": [NODE_TYPES, "string", "number", "number", "number", "number", "number"],
                "edge_fields": ["type", "name_or_index", "to_node"],
                "edge_types": [EDGE_TYPES, "string_or_number", "node"],
                "trace_function_info_fields": [],
                "trace_node_fields": [],
                "sample_fields": [],
                "location_fields": []
            },
            "node_count": nodes.len(),
            "edge_count": flat_edges.len() / 3,
            "trace_function_count": 0
        },
        "nodes": flat_nodes,
        "edges": flat_edges,
        "trace_function_infos": [],
        "trace_tree": [],
        "samples": [],
        "locations": [],
        "strings": strings,
    })
}

/// The document with its keys in V8's order (`snapshot` first, which
/// readers rely on; serde_json's map sorts them).
fn v8_order(doc: &Value) -> Vec<u8> {
    let order = [
        "snapshot",
        "nodes",
        "edges",
        "trace_function_infos",
        "trace_tree",
        "samples",
        "locations",
        "strings",
    ];
    let map = doc.as_object().expect("an object");
    let parts: Vec<String> = order
        .iter()
        .filter_map(|k| map.get(*k).map(|v| format!("{k:?}:{v}")))
        .chain(map.iter().filter(|(k, _)| !order.contains(&k.as_str())).map(|(k, v)| format!("{k:?}:{v}")))
        .collect();
    format!("{{{}}}", parts.join(",")).into_bytes()
}

/// root ─shortcut─▶ global ─cache─▶ Map ─(table)─▶ (array) ─[0]─▶ Item ─payload─▶ "secret"
///                    │  └─weak─▶ Item (1000 bytes, only weakly held)      └─[1]─▶ Other
///  └─[1]─▶ (GC roots) ─[3]─▶ (Stack roots) ─[7]─▶ Other, OnStack
///
/// Other is held both by the table (a page object, reachable from the
/// global) and by a stack slot: DevTools (and the crate) attribute page
/// objects to the page, so the table dominates it. `extra` adds nodes at
/// the end (their edges from the table are given in `table_extra`).
fn graph(extra: Vec<N<'static>>, table_extra: Vec<(&'static str, Value, usize)>) -> Vec<N<'static>> {
    let mut table = vec![("internal", json!("0"), 6), ("internal", json!("1"), 8)];
    table.extend(table_extra);
    let mut nodes: Vec<N> = vec![
        ("synthetic", "", 1, 0, vec![("shortcut", json!("1"), 3), ("element", json!(1), 1)]),
        ("synthetic", "(GC roots)", 3, 0, vec![("element", json!(3), 2)]),
        ("synthetic", "(Stack roots)", 5, 0, vec![("internal", json!("7"), 8), ("internal", json!("8"), 10)]),
        (
            "object",
            "global",
            7,
            100,
            vec![("property", json!("cache"), 4), ("property", json!("self"), 3), ("weak", json!("w"), 7)],
        ),
        ("object", "Map", 9, 50, vec![("internal", json!("table"), 5)]),
        ("array", "", 11, 200, table),
        (
            "object",
            "Item",
            13,
            30,
            vec![("property", json!("__proto__"), 3), ("property", json!("payload"), 9)],
        ),
        ("object", "Item", 15, 1000, vec![]),
        ("object", "Other", 17, 30, vec![]),
        ("string", "secret", 19, 500, vec![]),
        ("object", "OnStack", 21, 8, vec![]),
    ];
    nodes.extend(extra);
    nodes
}

fn class<'a>(s: &'a Snapshot, name: &str) -> &'a ClassStats {
    s.classes().iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no class {name}"))
}

#[test]
fn exact_figures_of_a_known_graph() {
    let s = Snapshot::parse(&build(&graph(vec![], vec![]))).expect("parse");
    assert_eq!(s.node_count(), 11);
    let figures = |name| {
        let c = class(&s, name);
        (c.count, c.self_bytes, c.retained_bytes)
    };
    // Dominators: global ▸ Map ▸ table ▸ {Item 13 ▸ "secret", Other}; the
    // weakly held Item and OnStack hang off the root.
    assert_eq!(figures("global"), (1, 100, 100 + 50 + 200 + 30 + 500 + 30));
    assert_eq!(figures("Map"), (1, 50, 50 + 200 + 30 + 500 + 30));
    assert_eq!(figures("(array)"), (1, 200, 200 + 30 + 500 + 30));
    // Two top-level instances: 530 for the strongly held one, 1000 for the
    // weakly held one.
    assert_eq!(figures("Item"), (2, 1030, 530 + 1000));
    assert_eq!(figures("(string)"), (1, 500, 500));
    assert_eq!(figures("Other"), (1, 30, 30));
    assert_eq!(figures("OnStack"), (1, 8, 8));
    assert_eq!(figures("(synthetic)"), (3, 0, 0));
    // Largest retained first.
    let names: Vec<&str> = s.classes().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names[..4], ["Item", "global", "Map", "(array)"]);
    assert!(s.classes().iter().all(|c| c.count_delta.is_none() && c.new_count.is_none()));
}

#[test]
fn paths_of_a_known_graph() {
    let s = Snapshot::parse(&build(&graph(vec![], vec![]))).expect("parse");
    // The strongly held Item, not the bigger weakly held one.
    let item = retainer_path(&s, "Item", None).expect("a path to Item");
    assert_eq!(
        render(&item),
        "Item { payload } = -[1](shortcut)-> global -cache(property)-> Map -(table)(internal)-> (array) \
         -[0](internal)-> Item"
    );
    assert_eq!(item.class, "Item");
    assert_eq!(item.path[1].edge_type, "property");
    // Two steps from the stack roots, four from the global: through the
    // user's roots all the same.
    let other = retainer_path(&s, "Other", None).expect("a path to Other");
    assert_eq!(
        other.path.iter().map(|p| p.edge.as_str()).collect::<Vec<_>>(),
        ["[1]", "cache", "(table)", "[1]"]
    );
    // Only on the stack: through V8's roots.
    let on_stack = retainer_path(&s, "OnStack", None).expect("a path to OnStack");
    assert_eq!(
        render(&on_stack),
        "OnStack = -[1](element)-> (GC roots) -[3](element)-> (Stack roots) -[8](internal)-> OnStack"
    );
    assert!(retainer_path(&s, "NoSuchClass", None).is_none());
    // Only weakly held: no strong path.
    let weak = graph(vec![("object", "Weakling", 23, 8, vec![])], vec![("weak", json!("w"), 11)]);
    let weak = Snapshot::parse(&build(&weak)).expect("parse");
    assert!(retainer_path(&weak, "Weakling", None).is_none());
}

#[test]
fn diff_of_known_graphs() {
    let before = graph(vec![("object", "Gone", 23, 64, vec![])], vec![("internal", json!("2"), 11)]);
    let before = Snapshot::parse(&build(&before)).expect("before");
    // One more Item (id 25, new) in the table; Gone collected.
    let after = Snapshot::parse(&build(&graph(
        vec![("object", "Item", 25, 30, vec![("property", json!("fresh"), 9)])],
        vec![("internal", json!("2"), 11)],
    )))
    .expect("after");
    let d = diff(&before, &after);
    let item = d.iter().find(|c| c.name == "Item").expect("Item");
    assert_eq!((item.count, item.self_bytes), (3, 1060));
    assert_eq!((item.count_delta, item.self_bytes_delta, item.new_count), (Some(1), Some(30), Some(1)));
    let gone = d.iter().find(|c| c.name == "Gone").expect("a class only the first snapshot had");
    assert_eq!((gone.count, gone.self_bytes, gone.retained_bytes), (0, 0, 0));
    assert_eq!((gone.count_delta, gone.self_bytes_delta, gone.new_count), (Some(-1), Some(-64), Some(0)));
    let global = d.iter().find(|c| c.name == "global").expect("global");
    assert_eq!((global.count_delta, global.self_bytes_delta, global.new_count), (Some(0), Some(0), Some(0)));
    // The application's classes first, by what their new objects hold:
    // Item first, Gone last; then V8's own kinds.
    assert_eq!(d[0].name, "Item");
    assert_eq!(item.new_retained_bytes, Some(30));
    let user: Vec<&str> = d.iter().filter(|c| c.is_user_class()).map(|c| c.name.as_str()).collect();
    assert_eq!(user.last(), Some(&"Gone"));
    let first_v8 = d.iter().position(|c| !c.is_user_class()).expect("V8's own kinds");
    assert!(d[first_v8..].iter().all(|c| !c.is_user_class()), "{d:?}");
    assert!(
        d.iter().all(|c| c.count_delta.is_some() && c.self_bytes_delta.is_some() && c.new_count.is_some())
    );
    // The new Item, although the old one retains more and is first in the
    // table.
    let path = retainer_path(&after, "Item", Some(&before)).expect("a path");
    assert_eq!(path.instance, "Item { fresh }");
    assert_eq!(path.path.last().map(|p| p.edge.as_str()), Some("[2]"));
    // Nothing new of the class: any instance.
    let path = retainer_path(&after, "Map", Some(&before)).expect("a path");
    assert_eq!(path.path.last().map(|p| p.node.as_str()), Some("Map"));
}

/// Whatever the input, an error and never a panic.
fn rejects(json: &[u8]) -> String {
    match std::panic::catch_unwind(|| Snapshot::parse(json)) {
        Ok(Ok(_)) => panic!("accepted: {}", String::from_utf8_lossy(&json[..json.len().min(200)])),
        Ok(Err(e)) => e.to_string(),
        Err(_) => panic!("panicked on: {}", String::from_utf8_lossy(&json[..json.len().min(200)])),
    }
}

#[test]
fn bad_input_is_an_error() {
    assert!(rejects(b"").contains("not valid JSON"), "{}", rejects(b""));
    assert!(rejects(b"\x00\xff garbage").contains("not valid JSON"));
    assert!(rejects(b"[1, 2, 3]").contains("not a V8 heap snapshot"));
    assert!(rejects(b"{}").contains("no `snapshot`"), "{}", rejects(b"{}"));
    assert!(rejects(b"{\"nodes\": [1]}").contains("before `snapshot`"));
    let mut doc = document(&graph(vec![], vec![]));
    let good = v8_order(&doc);
    Snapshot::parse(&good).expect("the untouched snapshot parses");
    // Cut anywhere: in the meta, the arrays, the strings.
    for cut in (0..good.len()).step_by(7) {
        rejects(&good[..cut]);
    }
    type Mutation = Box<dyn Fn(&mut Value)>;
    let mutations: Vec<(&str, Mutation)> = vec![
        ("edge to a node that is not there", Box::new(|d| d["edges"][2] = json!(700))),
        ("edge to the middle of a node", Box::new(|d| d["edges"][2] = json!(8))),
        ("node name past the strings", Box::new(|d| d["nodes"][1] = json!(10_000))),
        ("edge name past the strings", Box::new(|d| d["edges"][4 * 3 + 1] = json!(10_000))),
        ("node type not in meta", Box::new(|d| d["nodes"][0] = json!(15))),
        ("edge type not in meta", Box::new(|d| d["edges"][0] = json!(7))),
        ("edge counts over the edges", Box::new(|d| d["nodes"][4] = json!(3))),
        ("edge counts under the edges", Box::new(|d| d["nodes"][4] = json!(1))),
        ("half a node", Box::new(|d| d["nodes"].as_array_mut().unwrap().push(json!(0)))),
        ("half an edge", Box::new(|d| d["edges"].as_array_mut().unwrap().push(json!(0)))),
        ("no nodes", Box::new(|d| (d["nodes"], d["edges"]) = (json!([]), json!([])))),
        ("negative number", Box::new(|d| d["nodes"][3] = json!(-5))),
        ("fraction", Box::new(|d| d["nodes"][3] = json!(1.5))),
        ("id past u32", Box::new(|d| d["nodes"][2] = json!(1u64 << 40))),
        ("string not a string", Box::new(|d| d["strings"][0] = json!(3))),
        ("no edge_count field", Box::new(|d| d["snapshot"]["meta"]["node_fields"][4] = json!("count"))),
        ("no to_node field", Box::new(|d| d["snapshot"]["meta"]["edge_fields"][2] = json!("to"))),
        ("node types not a list", Box::new(|d| d["snapshot"]["meta"]["node_types"][0] = json!("x"))),
        // Read by v8-heap-parser, not by us: its error, passed on.
        (
            "no trace_node_fields",
            Box::new(|d| _ = d["snapshot"]["meta"].as_object_mut().unwrap().remove("trace_node_fields")),
        ),
        ("root elsewhere", Box::new(|d| d["snapshot"]["root_index"] = json!(3))),
        ("no strings", Box::new(|d| _ = d.as_object_mut().unwrap().remove("strings"))),
        ("no edges", Box::new(|d| _ = d.as_object_mut().unwrap().remove("edges"))),
    ];
    for (what, mutate) in mutations {
        let mut bad = doc.clone();
        mutate(&mut bad);
        let message = rejects(&v8_order(&bad));
        assert!(message.contains("not a V8 heap snapshot"), "{what}: {message}");
    }
    // What v8-heap-parser would index past its arrays on.
    let orphan = rejects(&build(&graph(vec![("object", "Orphan", 23, 8, vec![])], vec![])));
    assert!(orphan.contains("last node has no retainers"), "{orphan}");
    rejects(&build(&[("synthetic", "", 1, 0, vec![])]));
    // A root index of 0 is what V8 means anyway.
    doc["snapshot"]["root_index"] = json!(0);
    Snapshot::parse(&v8_order(&doc)).expect("root_index 0");
}
