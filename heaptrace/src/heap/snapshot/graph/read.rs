//! Reading the JSON into a [`HeapGraph`] in one pass, without the
//! intermediate `Vec<u64>` per array a plain `Deserialize` would build,
//! and checking it.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{EdgeKind, HeapGraph, StringPool};
use crate::heap::snapshot::SnapshotError;

/// Reads and checks the whole snapshot: every index in range, edge counts
/// adding up, so that nothing later (ours or v8-heap-parser's indexing) can
/// go out of bounds on a malformed file.
pub(super) fn parse(json: &[u8]) -> Result<HeapGraph, SnapshotError> {
    let mut reader = serde_json::Deserializer::from_slice(json);
    let raw = RawSeed { input_len: json.len() }.deserialize(&mut reader).and_then(|raw| {
        reader.end()?;
        Ok(raw)
    });
    let raw = raw.map_err(|e| {
        // Our own checks while reading (a type out of range) and wrong
        // value types are JSON all right, just not a snapshot's.
        if e.is_data() { SnapshotError::Invalid(e.to_string()) } else { SnapshotError::Json(e) }
    })?;
    raw.into_graph()
}

#[derive(Deserialize)]
struct Header {
    meta: Meta,
    /// Absent in V8's output (the root is node 0); v8-heap-parser honours
    /// it, so it is checked to agree with ours.
    #[serde(default)]
    root_index: Option<u64>,
    /// To size the arrays up front: growing them by doubling would hold up
    /// to twice the memory while reading.
    #[serde(default)]
    node_count: u64,
    #[serde(default)]
    edge_count: u64,
}

#[derive(Deserialize)]
struct Meta {
    node_fields: Vec<String>,
    /// One entry per node field: the enum of names for `type`, a plain
    /// description ("string", "number") for the others.
    node_types: Vec<serde_json::Value>,
    edge_fields: Vec<String>,
    edge_types: Vec<serde_json::Value>,
}

/// Column positions, found by name.
#[derive(Clone, Copy)]
struct NodeColumns {
    width: usize,
    typ: usize,
    name: usize,
    id: usize,
    edge_count: usize,
}

#[derive(Clone, Copy)]
struct EdgeColumns {
    width: usize,
    typ: usize,
    name_or_index: usize,
    to_node: usize,
}

fn column(fields: &[String], name: &str, what: &str) -> Result<usize, String> {
    fields.iter().position(|f| f == name).ok_or_else(|| format!("snapshot.meta.{what} has no `{name}`"))
}

fn type_names(types: &[serde_json::Value], column: usize, what: &str) -> Result<Vec<String>, String> {
    let names = types
        .get(column)
        .and_then(|v| v.as_array())
        .ok_or_else(|| format!("snapshot.meta.{what}: the `type` entry is not a list of names"))?;
    let names: Vec<String> = names.iter().map(|n| n.as_str().unwrap_or("").to_string()).collect();
    // Stored as u8 per node and edge; V8 has 15 node types and 7 edge types.
    if names.len() > 256 {
        return Err(format!("snapshot.meta.{what}: {} type names (at most 256 supported)", names.len()));
    }
    Ok(names)
}

#[derive(Default)]
struct Raw {
    header: Option<(NodeColumns, EdgeColumns, Vec<String>, Vec<String>)>,
    root_index: Option<u64>,
    nodes: Option<NodeArrays>,
    edges: Option<EdgeArrays>,
    strings: Option<StringPool>,
}

#[derive(Default)]
struct NodeArrays {
    typ: Vec<u8>,
    name: Vec<u32>,
    id: Vec<u32>,
    edge_count: Vec<u32>,
}

#[derive(Default)]
struct EdgeArrays {
    typ: Vec<u8>,
    name: Vec<u32>,
    to: Vec<u32>,
}

struct RawSeed {
    input_len: usize,
}

impl<'de> DeserializeSeed<'de> for RawSeed {
    type Value = Raw;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Raw, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RawSeed {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a V8 heap snapshot (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut raw = Raw::default();
        let (mut node_rows, mut edge_rows) = (0, 0);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "snapshot" => {
                    let header: Header = map.next_value()?;
                    raw.root_index = header.root_index;
                    let layout = columns(&header.meta).map_err(de::Error::custom)?;
                    // Believed only as far as the input could hold that
                    // many rows (at least two bytes a number: "0,").
                    let at_most = |width: usize| self.input_len / (2 * width.max(1));
                    node_rows = (header.node_count as usize).min(at_most(layout.0.width));
                    edge_rows = (header.edge_count as usize).min(at_most(layout.1.width));
                    raw.header = Some(layout);
                }
                // V8 writes `snapshot` first; the arrays cannot be read
                // without its column layout.
                "nodes" => {
                    let (nodes, _, types, _) = raw
                        .header
                        .as_ref()
                        .ok_or_else(|| de::Error::custom("`nodes` comes before `snapshot` (the layout)"))?;
                    raw.nodes = Some(map.next_value_seed(NodesSeed(*nodes, types.len(), node_rows))?);
                }
                "edges" => {
                    let (_, edges, _, types) = raw
                        .header
                        .as_ref()
                        .ok_or_else(|| de::Error::custom("`edges` comes before `snapshot` (the layout)"))?;
                    raw.edges = Some(map.next_value_seed(EdgesSeed(*edges, types.len(), edge_rows))?);
                }
                "strings" => raw.strings = Some(map.next_value_seed(StringsSeed)?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(raw)
    }
}

fn columns(meta: &Meta) -> Result<(NodeColumns, EdgeColumns, Vec<String>, Vec<String>), String> {
    let nf = &meta.node_fields;
    let nodes = NodeColumns {
        width: nf.len(),
        typ: column(nf, "type", "node_fields")?,
        name: column(nf, "name", "node_fields")?,
        id: column(nf, "id", "node_fields")?,
        edge_count: column(nf, "edge_count", "node_fields")?,
    };
    // Not read here, but v8-heap-parser's sizes are all zero without it.
    column(nf, "self_size", "node_fields")?;
    let ef = &meta.edge_fields;
    let edges = EdgeColumns {
        width: ef.len(),
        typ: column(ef, "type", "edge_fields")?,
        name_or_index: column(ef, "name_or_index", "edge_fields")?,
        to_node: column(ef, "to_node", "edge_fields")?,
    };
    let node_types = type_names(&meta.node_types, nodes.typ, "node_types")?;
    let edge_types = type_names(&meta.edge_types, edges.typ, "edge_types")?;
    Ok((nodes, edges, node_types, edge_types))
}

fn to_u32<E: de::Error>(value: u64, what: &str) -> Result<u32, E> {
    u32::try_from(value).map_err(|_| E::custom(format!("{what} {value} is out of range")))
}

fn to_u8_type<E: de::Error>(value: u64, types: usize, what: &str) -> Result<u8, E> {
    match u8::try_from(value) {
        Ok(t) if usize::from(t) < types => Ok(t),
        _ => Err(E::custom(format!("{what} type {value} is not one of the {types} in snapshot.meta"))),
    }
}

/// The layout, the number of node types, the expected number of rows.
struct NodesSeed(NodeColumns, usize, usize);

impl<'de> DeserializeSeed<'de> for NodesSeed {
    type Value = NodeArrays;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<NodeArrays, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for NodesSeed {
    type Value = NodeArrays;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the `nodes` array of non-negative integers")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeArrays, A::Error> {
        let NodesSeed(c, types, rows) = self;
        let mut out = NodeArrays {
            typ: Vec::with_capacity(rows),
            name: Vec::with_capacity(rows),
            id: Vec::with_capacity(rows),
            edge_count: Vec::with_capacity(rows),
        };
        let mut col = 0;
        while let Some(value) = seq.next_element::<u64>()? {
            match col {
                _ if col == c.typ => out.typ.push(to_u8_type(value, types, "node")?),
                _ if col == c.name => out.name.push(to_u32(value, "node name")?),
                _ if col == c.id => out.id.push(to_u32(value, "node id")?),
                _ if col == c.edge_count => out.edge_count.push(to_u32(value, "node edge_count")?),
                _ => {}
            }
            col = if col + 1 == c.width { 0 } else { col + 1 };
        }
        if col != 0 {
            return Err(de::Error::custom("`nodes` ends in the middle of a node"));
        }
        Ok(out)
    }
}

struct EdgesSeed(EdgeColumns, usize, usize);

impl<'de> DeserializeSeed<'de> for EdgesSeed {
    type Value = EdgeArrays;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<EdgeArrays, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EdgesSeed {
    type Value = EdgeArrays;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the `edges` array of non-negative integers")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EdgeArrays, A::Error> {
        let EdgesSeed(c, types, rows) = self;
        let mut out = EdgeArrays {
            typ: Vec::with_capacity(rows),
            name: Vec::with_capacity(rows),
            to: Vec::with_capacity(rows),
        };
        let mut col = 0;
        while let Some(value) = seq.next_element::<u64>()? {
            match col {
                _ if col == c.typ => out.typ.push(to_u8_type(value, types, "edge")?),
                _ if col == c.name_or_index => out.name.push(to_u32(value, "edge name_or_index")?),
                // Kept as an offset for now: the node row length is known
                // (from the header) but the check against the node count
                // waits until everything is read.
                _ if col == c.to_node => out.to.push(to_u32(value, "edge to_node")?),
                _ => {}
            }
            col = if col + 1 == c.width { 0 } else { col + 1 };
        }
        if col != 0 {
            return Err(de::Error::custom("`edges` ends in the middle of an edge"));
        }
        Ok(out)
    }
}

struct StringsSeed;

impl<'de> DeserializeSeed<'de> for StringsSeed {
    type Value = StringPool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<StringPool, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for StringsSeed {
    type Value = StringPool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the `strings` array of strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StringPool, A::Error> {
        let mut pool = StringPool::default();
        while seq.next_element_seed(AppendString(&mut pool.text))?.is_some() {
            pool.ends.push(pool.text.len());
        }
        Ok(pool)
    }
}

/// Appends one string to the pool without an intermediate `String` (the
/// JSON parser hands over a borrowed slice when there are no escapes).
struct AppendString<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for AppendString<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for AppendString<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        self.0.push_str(s);
        Ok(())
    }
}

impl Raw {
    fn into_graph(self) -> Result<HeapGraph, SnapshotError> {
        let invalid = |what: String| SnapshotError::Invalid(what);
        let (nc, _, node_types, edge_types) =
            self.header.ok_or_else(|| invalid("no `snapshot` (meta)".into()))?;
        let nodes = self.nodes.ok_or_else(|| invalid("no `nodes` array".into()))?;
        let mut edges = self.edges.ok_or_else(|| invalid("no `edges` array".into()))?;
        let strings = self.strings.ok_or_else(|| invalid("no `strings` array".into()))?;
        let n = nodes.typ.len();
        if n == 0 {
            return Err(invalid("no nodes (not even the root)".into()));
        }
        if n >= u32::MAX as usize || edges.to.len() >= u32::MAX as usize {
            return Err(invalid(format!("{n} nodes, {} edges: too many", edges.to.len())));
        }
        if self.root_index.is_some_and(|r| r != 0) {
            return Err(invalid("the root is not the first node (`root_index` set)".into()));
        }
        if let Some(bad) = nodes.name.iter().find(|&&s| s as usize >= strings.len()) {
            return Err(invalid(format!("a node's name is string {bad}, of {}", strings.len())));
        }
        let mut first_edge = Vec::with_capacity(n + 1);
        let mut total: u64 = 0;
        first_edge.push(0);
        for &count in &nodes.edge_count {
            total += u64::from(count);
            first_edge.push(u32::try_from(total).unwrap_or(u32::MAX));
        }
        if total != edges.to.len() as u64 {
            return Err(invalid(format!(
                "the nodes' edge counts add up to {total}, but `edges` holds {}",
                edges.to.len()
            )));
        }
        for to in &mut edges.to {
            let offset = *to as usize;
            if !offset.is_multiple_of(nc.width) || offset / nc.width >= n {
                return Err(invalid(format!("an edge points at offset {offset}, not a node")));
            }
            // Fits: below n, which fits in u32.
            *to = (offset / nc.width) as u32;
        }
        // v8-heap-parser's retainer index (DevTools' code, where writing
        // past an array's end is harmless) indexes past its end when the
        // last node has no retainers. In the snapshots of Node 18 to 26 the
        // last node is one of Node's native objects, with a holder (nodes
        // without one, unreachable code, are in the middle).
        if !edges.to.iter().any(|&to| to as usize == n - 1) {
            return Err(invalid("the last node has no retainers (v8-heap-parser cannot read that)".into()));
        }
        for (e, &name) in edges.name.iter().enumerate() {
            let indexed = EdgeKind::of(&edge_types[usize::from(edges.typ[e])]) == EdgeKind::Indexed;
            if !indexed && name as usize >= strings.len() {
                return Err(invalid(format!("an edge's name is string {name}, of {}", strings.len())));
            }
        }
        Ok(HeapGraph {
            node_type: nodes.typ,
            node_name: nodes.name,
            node_id: nodes.id,
            first_edge,
            edge_type: edges.typ,
            edge_name: edges.name,
            edge_to: edges.to,
            node_types,
            edge_kinds: edge_types.iter().map(|t| EdgeKind::of(t)).collect(),
            edge_types,
            strings,
        })
    }
}
