//! Allocation sites, for real: stacks taken in the kernel at a stock node's
//! allocating syscalls, named from outside (V8's postmortem metadata for JS
//! frames, the binary's symbols for native ones), on Node 20 to 26, with no
//! flag given to node unless a test says so.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use support::*;

fn workload(name: &str) -> PathBuf {
    repo_root().join("workloads").join(name)
}

/// The 1-based line of the first line of `file` that contains `needle`.
fn line_of(file: &Path, needle: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle} not in {file:?}")) as u64
        + 1
}

/// Spawns, retrying while the executable is busy: a copy of node made by
/// `unique_node` can still be open for writing in a child another test
/// thread forked at that moment, until that child execs.
fn spawn(command: &mut Command) -> Child {
    let deadline = Instant::now() + WAIT;
    loop {
        match command.spawn() {
            Ok(child) => return child,
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("spawning {command:?}: {e}"),
        }
    }
}

/// Starts `node script` (under a name of its own) and waits for "ready".
fn start_node(node: &Path, args: &[&str], script: &Path, env: &[(&str, &str)]) -> (ChildGuard, u32) {
    let mut command = Command::new(node);
    command.args(args).arg(script).envs(env.iter().copied()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    // Out of the source tree: with --perf-basic-prof, node writes a log
    // (isolate-*-v8.log) into its working directory.
    command.current_dir(env!("CARGO_TARGET_TMPDIR"));
    let mut child = spawn(&mut command);
    let out = line_channel(child.stdout.take().unwrap());
    let pid = child.id();
    let guard = ChildGuard(child);
    expect_line_on(&out, "ready");
    // Keep draining its stdout so it never blocks on a full pipe.
    std::thread::spawn(move || while out.recv().is_ok() {});
    (guard, pid)
}

/// Runs heaptrace on `pid` for `seconds` with `extra` flags; returns its
/// JSON records and its stderr.
fn trace(pid: u32, seconds: u32, extra: &[&str]) -> (Vec<Value>, String) {
    let out: Output = Command::new(heaptrace_bin())
        .args(["-o", "json", "-v", "--pid", &pid.to_string(), "-d", &format!("{seconds}s")])
        .args(extra)
        .output()
        .expect("running heaptrace");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "heaptrace failed: {stderr}");
    let records: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
        .collect();
    (records, stderr)
}

fn sites(records: &[Value], pid: u32) -> Vec<Value> {
    process_summary(records, pid)["allocation_sites"].as_array().expect("allocation_sites").clone()
}

/// The first named JS frame of a site in the application's code (not in
/// Node's own `node:` modules).
fn first_js(site: &Value) -> Option<&Value> {
    site["frames"].as_array().unwrap().iter().find(|f| {
        f["kind"] == "js"
            && f["function"] != "[JS]"
            && !f["file"].as_str().unwrap_or("node:").starts_with("node:")
    })
}

fn describe(site: &Value) -> String {
    let frames: Vec<String> = site["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("{} [{}] {}:{}", f["function"], f["kind"], f["file"], f["line"]))
        .collect();
    format!(
        "bytes {} live {} count {}\n    {}",
        site["bytes"],
        site["live_bytes"],
        site["count"],
        frames.join("\n    ")
    )
}

/// The number just before `words` in `line`.
fn number_before(line: &str, words: &str) -> u64 {
    let end = line.find(words).unwrap_or_else(|| panic!("{words:?} not in {line}"));
    let digits: String = line[..end]
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .chars()
        .rev()
        .collect();
    digits.parse().unwrap_or_else(|_| panic!("no number before {words:?} in {line}"))
}

/// The uniquely named function that allocates large arrays is the top
/// site's first JS frame, with its file and line.
fn big_arrays_are_named(version: &str) {
    require_root();
    // A tag per version: tests run in parallel and a name is per tag.
    let tag = format!("b{}", version.split('.').next().unwrap());
    let (node, _comm) = unique_node(version, &tag);
    let script = workload("sites/big-arrays.js");
    let line = line_of(&script, "function heaptraceBigArrayMaker");
    let (_node, pid) = start_node(&node, &[], &script, &[]);
    let (records, stderr) = trace(pid, 6, &[]);
    let sites = sites(&records, pid);
    let top = sites.first().unwrap_or_else(|| panic!("no allocation sites; stderr: {stderr}"));
    let js = first_js(top).unwrap_or_else(|| panic!("no named JS frame in the top site:\n{}", describe(top)));
    assert_eq!(js["function"], "heaptraceBigArrayMaker", "{}", describe(top));
    assert!(js["file"].as_str().unwrap().ends_with("workloads/sites/big-arrays.js"), "{}", describe(top));
    assert_eq!(js["line"].as_u64(), Some(line), "{}", describe(top));
    // About 50 arrays a second of 2.3 MiB each, for 6 s.
    assert!(top["count"].as_u64().unwrap() >= 100, "{}", describe(top));
    // V8 calls it: its builtins and C++ keep their names.
    let frames = top["frames"].as_array().unwrap();
    assert!(frames.iter().any(|f| f["kind"] == "builtin"), "no builtin frame:\n{}", describe(top));
    assert!(
        frames.iter().any(|f| f["function"].as_str().unwrap().starts_with("v8::internal::")),
        "no V8 frame:\n{}",
        describe(top)
    );
}

#[test]
fn big_arrays_are_named_on_node_20() {
    big_arrays_are_named("20.20.2");
}

#[test]
fn big_arrays_are_named_on_node_22() {
    big_arrays_are_named("22.23.3");
}

#[test]
fn big_arrays_are_named_on_node_24() {
    big_arrays_are_named("24.21.0");
}

#[test]
fn big_arrays_are_named_on_node_26() {
    big_arrays_are_named("26.10.0");
}

/// With --perf-basic-prof, the perf map names the JIT-compiled frames too:
/// heaptrace checks every JS frame it can against it, and they agree.
#[test]
fn metadata_names_equal_the_perf_maps() {
    require_root();
    let (node, _comm) = unique_node("22.23.3", "pm");
    let script = workload("sites/big-arrays.js");
    let (_node, pid) = start_node(&node, &["--perf-basic-prof"], &script, &[]);
    let (records, stderr) = trace(pid, 6, &[]);
    let line = stderr
        .lines()
        .find(|l| l.contains("perf map:"))
        .unwrap_or_else(|| panic!("no perf map check reported: {stderr}"));
    // "... perf map: N JS frames checked, M named differently"
    let numbers: Vec<u64> = line
        .split("perf map:")
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(numbers.len() >= 2, "{line}");
    assert!(numbers[0] > 0, "no frame was checked against the perf map: {line}");
    assert_eq!(numbers[1], 0, "names differ from the perf map's: {line}\n{stderr}");
    let top = &sites(&records, pid)[0];
    assert_eq!(first_js(top).unwrap()["function"], "heaptraceBigArrayMaker", "{}", describe(top));
}

/// The Express-like leak under ab: the handler that keeps
/// `new Array(100000)` per request is the top live site.
#[test]
fn express_handler_is_the_top_live_site() {
    require_root();
    let (node, _comm) = unique_node("22.23.3", "ex");
    let script = workload("diagnosis/express-leak.js");
    let mut child = spawn(Command::new(&node).arg(&script).stdout(Stdio::piped()).stderr(Stdio::inherit()));
    let out = line_channel(child.stdout.take().unwrap());
    let pid = child.id();
    let _node = ChildGuard(child);
    let port = expect_line_on(&out, "listening").split_whitespace().nth(1).unwrap().to_owned();
    expect_line_on(&out, "ready");
    let tracer = Command::new(heaptrace_bin())
        .args(["-o", "json", "--pid", &pid.to_string(), "-d", "8s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("heaptrace");
    std::thread::sleep(Duration::from_secs(1)); // heaptrace attaches
    let ab = Command::new("ab")
        .args(["-q", "-k", "-c", "10", "-n", "300", &format!("http://127.0.0.1:{port}/")])
        .output()
        .expect("ab (apache2-utils; scripts/setup.sh installs it)");
    assert!(ab.status.success(), "ab failed: {}", String::from_utf8_lossy(&ab.stderr));
    let done = tracer.wait_with_output().unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let records: Vec<Value> =
        String::from_utf8_lossy(&done.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let sites = sites(&records, pid);
    let top = sites.iter().max_by_key(|s| s["live_bytes"].as_u64().unwrap()).unwrap();
    let js = first_js(top).unwrap_or_else(|| panic!("no JS frame:\n{}", describe(top)));
    assert_eq!(js["function"], "handler", "{}", describe(top));
    assert_eq!(
        js["line"].as_u64(),
        Some(line_of(&script, "function handler(req, res)")),
        "{}",
        describe(top)
    );
    // 300 requests kept ~800 KB each: most of it is still live, in the
    // handler's sites (one per distinct stack that reached it).
    let handler_live: u64 = sites
        .iter()
        .filter(|s| first_js(s).is_some_and(|f| f["function"] == "handler"))
        .map(|s| s["live_bytes"].as_u64().unwrap())
        .sum();
    assert!(handler_live >= 150 << 20, "{handler_live} live bytes; top site:\n{}", describe(top));
}

/// A Buffer leak: native memory (malloc'd outside V8's heap). The top
/// site's frames go through Node's Buffer allocation to the JS caller, past
/// glibc's malloc, which has no frame pointers.
#[test]
fn buffer_leak_names_node_and_the_js_caller() {
    require_root();
    let (node, _comm) = unique_node("22.23.3", "bu");
    let script = workload("sites/buffer-hoard.js");
    let (_node, pid) = start_node(&node, &[], &script, &[]);
    let (records, stderr) = trace(pid, 6, &[]);
    // Every Buffer's stack met glibc without frame pointers; nearly all
    // are recovered by the kernel's scan.
    let line = stderr.lines().find(|l| l.contains("heaptrace: stacks:")).expect(&stderr);
    eprintln!("{line}");
    let scanned = number_before(line, " past code without frame pointers");
    let missed = number_before(line, " of those not recovered") + number_before(line, " rejected here");
    assert!(scanned >= 200, "{line}");
    assert!(missed * 20 <= scanned, "more than 5 % of the scans failed: {line}");
    let sites = sites(&records, pid);
    let top = sites.first().unwrap_or_else(|| panic!("no sites: {stderr}"));
    // Buffers live outside V8's heap. (A malloc'd block that happens to sit
    // on V8's 256 KiB chunk alignment, one in 64, counts as V8's.)
    let live = top["live_bytes"].as_u64().unwrap();
    assert!(
        top["live_v8_bytes"].as_u64().unwrap() * 10 < live,
        "Buffers are native memory:\n{}",
        describe(top)
    );
    assert!(top["live_bytes"].as_u64().unwrap() >= 100 * (256 << 10), "{}", describe(top));
    let frames = top["frames"].as_array().unwrap();
    let js = first_js(top).unwrap_or_else(|| panic!("no JS caller:\n{}", describe(top)));
    assert_eq!(js["function"], "heaptraceBufferHoarder", "{}", describe(top));
    let js_at = frames.iter().position(|f| f == js).unwrap();
    // Node's Buffer allocation, in JS (node:buffer) and in C++ (node::Buffer).
    let between = &frames[..js_at];
    let named = |pred: &dyn Fn(&str) -> bool| between.iter().any(|f| pred(f["function"].as_str().unwrap()));
    assert!(named(&|n| n.starts_with("node::Buffer::")), "no node::Buffer frame:\n{}", describe(top));
    assert!(named(&|n| n.contains("UnsafeBuffer") || n == "alloc"), "no JS Buffer frame:\n{}", describe(top));
}

/// A stripped node (official 24: V8's symbols are gone with .symtab):
/// native frames come back as addresses with the file's build-id, JS frames
/// as [JS], and nothing breaks.
#[test]
fn stripped_node_gives_addresses_and_build_ids() {
    require_root();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("stripped-node");
    std::fs::create_dir_all(&dir).unwrap();
    let node = dir.join(format!("nstrip{}", std::process::id()));
    let status = Command::new("strip").arg("-o").arg(&node).arg(node_bin("24.21.0")).status().expect("strip");
    assert!(status.success());
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _remove = Remove(node.clone());
    let build_id = String::from_utf8(Command::new("readelf").arg("-n").arg(&node).output().unwrap().stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_owned))
        .expect("a build-id");
    let (_node, pid) = start_node(&node, &[], &workload("sites/big-arrays.js"), &[]);
    let (records, _stderr) = trace(pid, 5, &[]);
    let sites = sites(&records, pid);
    assert!(!sites.is_empty());
    let frames: Vec<&Value> = sites.iter().flat_map(|s| s["frames"].as_array().unwrap()).collect();
    let in_node: Vec<&&Value> = frames.iter().filter(|f| f["build_id"] == build_id.as_str()).collect();
    assert!(!in_node.is_empty(), "no frame carries node's build-id {build_id}");
    assert!(in_node.iter().all(|f| f["function"].as_str().unwrap().starts_with("0x")), "{in_node:?}");
    let js: Vec<&&Value> = frames.iter().filter(|f| f["kind"] == "js").collect();
    assert!(!js.is_empty(), "JS frames are still told apart (by their code's place)");
    assert!(js.iter().all(|f| f["function"] == "[JS]"), "{js:?}");
}

/// The exports of a real run: `go tool pprof -top` lists the allocating
/// function, and the flame graph shows it.
#[test]
fn pprof_and_flame_graph_of_a_real_run() {
    require_root();
    let (node, _comm) = unique_node("22.23.3", "pp");
    let (_node, pid) = start_node(&node, &[], &workload("sites/big-arrays.js"), &[]);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("exports-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (pb, svg) = (dir.join("sites.pb.gz"), dir.join("sites.svg"));
    let (records, _) =
        trace(pid, 5, &["--pprof", pb.to_str().unwrap(), "--flamegraph", svg.to_str().unwrap()]);
    assert!(!sites(&records, pid).is_empty());
    let top = Command::new("go")
        .args(["tool", "pprof", "-top", "-cum", "-sample_index=alloc_space"])
        .arg(&pb)
        .output()
        .expect("go (golang-go; scripts/setup.sh installs it)");
    let text = String::from_utf8_lossy(&top.stdout);
    assert!(top.status.success(), "{}", String::from_utf8_lossy(&top.stderr));
    assert!(text.contains("heaptraceBigArrayMaker"), "pprof -top:\n{text}");
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.contains("heaptraceBigArrayMaker"), "the flame graph names the function");
    let _ = std::fs::remove_dir_all(&dir);
}
