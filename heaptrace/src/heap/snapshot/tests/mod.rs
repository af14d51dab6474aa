//! Tests on real snapshots, written by the cached official Node builds
//! (scripts/fetch-node.sh) running small scripts that build known
//! structures, and on hand-built ones for exact dominator figures and bad
//! input.

mod handmade;
mod real;

use std::path::PathBuf;
use std::process::Command;

/// Where scripts/fetch-node.sh keeps the Node builds.
fn node_bin(version: &str) -> PathBuf {
    let cache = std::env::var_os("HEAPTRACE_NODE_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/heaptrace/node")
    });
    let node = cache.join(version).join("bin/node");
    assert!(
        node.is_file(),
        "{} is missing: these tests take real heap snapshots with Node {version}; run scripts/fetch-node.sh",
        node.display()
    );
    node
}

/// A scratch directory under target/, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/tmp/heap-snapshot-tests")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `script` with Node `version`; the script writes its snapshots with
/// `snap(n)` (to `<dir>/<n>.heapsnapshot`). Returns the files' contents,
/// one per name in `names`.
fn snapshots(version: &str, test: &str, script: &str, names: &[&str]) -> Vec<Vec<u8>> {
    let scratch = Scratch::new(&format!("{test}-{version}"));
    let prelude = format!(
        "const snap = (n) => require('v8').writeHeapSnapshot(require('path').join({:?}, n + '.heapsnapshot'));\n",
        scratch.0.display().to_string()
    );
    let file = scratch.0.join("script.js");
    std::fs::write(&file, format!("{prelude}{script}")).expect("writing the script");
    let out = Command::new(node_bin(version)).arg(&file).output().expect("running node");
    assert!(
        out.status.success(),
        "node {version} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    names
        .iter()
        .map(|n| {
            let path = scratch.0.join(format!("{n}.heapsnapshot"));
            std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        })
        .collect()
}

/// `edge -> node` steps, one line, for messages and the eye.
fn render(path: &crate::heap::report::RetainerPath) -> String {
    let steps: Vec<String> =
        path.path.iter().map(|s| format!("-{}({})-> {}", s.edge, s.edge_type, s.node)).collect();
    format!("{} = {}", path.instance, steps.join(" "))
}
