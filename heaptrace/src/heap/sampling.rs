//! The sampling heap profiler's profile (`HeapProfiler.stopSampling`) as
//! allocation sites: which JS functions allocated the memory still alive
//! when sampling stopped. V8 drops the samples of objects the GC freed, so
//! what is left is what the process kept.
//!
//! The profile is a call tree: `{ head: { callFrame: { functionName, url,
//! lineNumber, columnNumber }, selfSize, id, children: [...] }, samples }`,
//! with 0-based lines and `selfSize` the estimated live bytes allocated by
//! that node itself.

use std::collections::HashMap;

use serde::Deserialize;

use super::report::SampledSite;

/// How many callers a site keeps.
const STACK_DEPTH: usize = 8;

#[derive(Debug, thiserror::Error)]
#[error("the sampling heap profile is not what V8 sends: {0}")]
pub struct ProfileError(String);

#[derive(Deserialize)]
struct Profile {
    head: Node,
    #[serde(default)]
    samples: Vec<Sample>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Node {
    call_frame: CallFrame,
    #[serde(default)]
    self_size: u64,
    id: u64,
    #[serde(default)]
    children: Vec<Node>,
}

#[derive(Deserialize, Clone, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
struct CallFrame {
    function_name: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    line_number: i64,
    #[serde(default)]
    column_number: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sample {
    node_id: u64,
}

impl CallFrame {
    fn function(&self) -> &str {
        if self.function_name.is_empty() { "(anonymous)" } else { &self.function_name }
    }

    /// `handler (app.js:12)`, or just the name for builtins.
    fn describe(&self) -> String {
        if self.url.is_empty() {
            return self.function().to_string();
        }
        format!("{} ({}:{})", self.function(), short_url(&self.url), self.line_number + 1)
    }
}

/// The file name of a script URL or path: the full one is in the JSON.
fn short_url(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// The sites of a profile, largest live bytes first; sites with nothing
/// left alive are dropped.
pub fn sites(profile: &serde_json::Value) -> Result<Vec<SampledSite>, ProfileError> {
    let profile = Profile::deserialize(profile).map_err(|e| ProfileError(e.to_string()))?;
    let mut samples_per_node: HashMap<u64, u64> = HashMap::new();
    for s in &profile.samples {
        *samples_per_node.entry(s.node_id).or_default() += 1;
    }

    // One site per call frame, whatever the path to it: the stack kept is
    // that of the node that holds the most.
    struct Acc {
        site: SampledSite,
        largest_node: u64,
    }
    let mut by_frame: HashMap<CallFrame, Acc> = HashMap::new();
    // Depth-first with the path of callers, without recursion (deep
    // recursion in the profiled code makes deep trees).
    let mut work: Vec<(&Node, Vec<&CallFrame>)> = vec![(&profile.head, Vec::new())];
    while let Some((node, path)) = work.pop() {
        if node.self_size > 0 {
            let frame = &node.call_frame;
            let acc = by_frame.entry(frame.clone()).or_insert_with(|| Acc {
                site: SampledSite {
                    function: frame.function().to_string(),
                    url: frame.url.clone(),
                    line: u32::try_from(frame.line_number + 1).unwrap_or(0),
                    column: u32::try_from(frame.column_number + 1).unwrap_or(0),
                    ..Default::default()
                },
                largest_node: 0,
            });
            acc.site.live_bytes += node.self_size;
            acc.site.samples += samples_per_node.get(&node.id).copied().unwrap_or(0);
            if node.self_size > acc.largest_node {
                acc.largest_node = node.self_size;
                acc.site.stack = path
                    .iter()
                    .rev()
                    .filter(|f| !is_root(f))
                    .take(STACK_DEPTH)
                    .map(|f| f.describe())
                    .collect();
            }
        }
        for child in &node.children {
            let mut child_path = path.clone();
            child_path.push(&node.call_frame);
            work.push((child, child_path));
        }
    }
    let mut sites: Vec<SampledSite> = by_frame.into_values().map(|a| a.site).collect();
    sites.sort_by(|a, b| b.live_bytes.cmp(&a.live_bytes).then_with(|| a.function.cmp(&b.function)));
    Ok(sites)
}

fn is_root(frame: &CallFrame) -> bool {
    frame.function_name == "(root)" && frame.url.is_empty()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn frame(name: &str, url: &str, line: i64) -> serde_json::Value {
        json!({ "functionName": name, "scriptId": "1", "url": url, "lineNumber": line, "columnNumber": 4 })
    }

    /// The shape V8 sends (checked against a real profile in tests/heap.rs):
    /// the leaking function reached by two paths is one site, with the
    /// stack of its larger path.
    #[test]
    fn sites_add_up_per_function_with_the_larger_stack() {
        let profile = json!({
            "head": { "callFrame": frame("(root)", "", -1), "selfSize": 0, "id": 1, "children": [
                { "callFrame": frame("handler", "file:///srv/app.js", 9), "selfSize": 0, "id": 2, "children": [
                    { "callFrame": frame("leak", "file:///srv/app.js", 2), "selfSize": 1000, "id": 3, "children": [] }
                ]},
                { "callFrame": frame("", "file:///srv/app.js", 20), "selfSize": 64, "id": 4, "children": [
                    { "callFrame": frame("leak", "file:///srv/app.js", 2), "selfSize": 3000, "id": 5, "children": [] }
                ]},
                { "callFrame": frame("(V8 API)", "", -1), "selfSize": 0, "id": 6, "children": [] }
            ]},
            "samples": [ { "size": 1000, "nodeId": 3, "ordinal": 1 }, { "size": 3000, "nodeId": 5, "ordinal": 2 },
                         { "size": 64, "nodeId": 4, "ordinal": 3 } ]
        });
        let sites = sites(&profile).unwrap();
        assert_eq!(sites.len(), 2, "{sites:?}");
        assert_eq!(sites[0].function, "leak");
        assert_eq!((sites[0].line, sites[0].column), (3, 5));
        assert_eq!(sites[0].live_bytes, 4000);
        assert_eq!(sites[0].samples, 2);
        assert_eq!(sites[0].stack, vec!["(anonymous) (app.js:21)"]);
        assert_eq!(sites[1].function, "(anonymous)");
        assert_eq!(sites[1].live_bytes, 64);
    }

    #[test]
    fn a_profile_of_another_shape_is_an_error() {
        assert!(sites(&json!({ "nodes": [] })).is_err());
        assert!(sites(&json!(null)).is_err());
    }
}
