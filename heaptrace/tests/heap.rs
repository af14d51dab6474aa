//! `heaptrace heap` end to end, as root, on real node processes: each runs
//! in a network namespace of its own (loopback only), as in a container, so
//! its inspector's port 9229 is its own and the test reaches it only the way
//! heaptrace does. Load comes from `ab` inside that namespace.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::mpsc::Receiver,
    time::Duration,
};

use serde_json::Value;
use support::*;

const VERSIONS: [&str; 5] = ["18.20.8", "20.20.2", "22.23.3", "24.21.0", "26.10.0"];

/// The backing store of `new Array(100000)`: a FixedArray of 100,000 8-byte
/// slots and its 16-byte header (official builds have no pointer
/// compression).
const ARRAY_100K_BYTES: u64 = 16 + 8 * 100_000;

/// A node server in a network namespace of its own.
struct NetnsNode {
    child: ChildGuard,
    port: u16,
    _stdout: Receiver<String>,
}

impl NetnsNode {
    fn start(node: &Path, flags: &[&str], script: &Path, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new("unshare");
        cmd.args(["-n", "sh", "-c", "ip link set lo up && exec \"$@\"", "sh"])
            .arg(node)
            .args(flags)
            .arg(script);
        cmd.envs(env.iter().copied()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = ChildGuard(cmd.spawn().expect("spawning unshare -n node"));
        let stdout = line_channel(child.0.stdout.take().unwrap());
        let line = expect_line_on(&stdout, "listening ");
        let port = line["listening ".len()..].trim().parse().unwrap();
        Self { child, port, _stdout: stdout }
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// A command run inside the server's network namespace.
    fn inside(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid().to_string(), "-n", program]);
        cmd
    }

    fn get(&self, path: &str) -> Option<String> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let out = self.inside("curl").args(["-sS", "-m", "10", &url]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `ab -n N -c C` against `/`; every request must succeed.
    fn load(&self, n: u32, c: u32) {
        let url = format!("http://127.0.0.1:{}/", self.port);
        let out = self
            .inside("ab")
            .args(["-q", "-n", &n.to_string(), "-c", &c.to_string(), &url])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "ab failed: {text} {}", String::from_utf8_lossy(&out.stderr));
        let complete = text.lines().find(|l| l.starts_with("Complete requests:")).unwrap_or_default();
        assert!(complete.ends_with(&format!(" {n}")), "ab: {complete:?} (wanted {n})\n{text}");
        let failed = text.lines().find(|l| l.starts_with("Failed requests:")).unwrap_or_default();
        assert!(failed.ends_with(" 0"), "ab: {failed}");
    }

    /// Whether port 9229 refuses connections in the server's namespace.
    fn inspector_closed(&self) -> bool {
        let out =
            self.inside("curl").args(["-sS", "-m", "3", "http://127.0.0.1:9229/json/list"]).output().unwrap();
        // curl's exit status 7: "Failed to connect".
        out.status.code() == Some(7)
    }

    fn alive(&self) -> bool {
        Path::new(&format!("/proc/{}/status", self.pid())).exists()
    }
}

fn workload(name: &str) -> PathBuf {
    repo_root().join("workloads").join(name)
}

/// `heaptrace heap ARGS` to its end.
fn heap(args: &[&str]) -> Output {
    Command::new(heaptrace_bin()).arg("heap").args(args).output().expect("running heaptrace heap")
}

/// The one `heap` record of a JSON run.
fn heap_record(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "heaptrace heap failed: {stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(v["type"], "heap", "{v}");
    v
}

/// `heaptrace heap PID --diff WAIT -o json`, with `during` run once the
/// first snapshot is taken; returns its output.
fn diff_with(pid: u32, wait: &str, during: impl FnOnce()) -> Output {
    let mut child = Command::new(heaptrace_bin())
        .args(["heap", &pid.to_string(), "--diff", wait, "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = line_channel(child.stderr.take().unwrap());
    let mut said = vec![expect_line_on(&stderr, "heaptrace: ")];
    while !said.last().unwrap().contains("second snapshot in") {
        said.push(stderr.recv_timeout(WAIT).unwrap_or_else(|_| panic!("no second snapshot: {said:?}")));
    }
    during();
    let out = child.wait_with_output().unwrap();
    let rest: Vec<String> = stderr.try_iter().collect();
    said.extend(rest);
    Output { stderr: said.join("\n").into_bytes(), ..out }
}

fn names_of(path: &Value) -> Vec<(String, String)> {
    path.as_array()
        .unwrap()
        .iter()
        .map(|s| (s["edge"].as_str().unwrap().to_owned(), s["node"].as_str().unwrap().to_owned()))
        .collect()
}

/// The classic Express leak on every supported version: the diff's top
/// growth is `Object`, each holding a 100,000-slot `Array`, and the path
/// that keeps one alive goes through the `leaks` variable. The server
/// answers all the while, and its inspector is closed afterwards.
#[test]
fn express_leak_diff_names_object_holding_array_through_leaks() {
    require_root();
    let mut failures = Vec::new();
    for version in VERSIONS {
        let server = NetnsNode::start(
            &node_bin(version),
            &["--max-old-space-size=1024"],
            &workload("diagnosis/express-leak.js"),
            &[("PORT", "0")],
        );
        server.load(10, 2); // code paths compiled before the first snapshot
        let out = diff_with(server.pid(), "3s", || server.load(40, 4));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let v = heap_record(&out);
        let top = &v["classes"][0];
        let check = |ok: bool, what: &str| if ok { None } else { Some(format!("{version}: {what}: {v}")) };
        let path = v["retainers"][0]["path"].clone();
        let steps = if path.is_array() { names_of(&path) } else { Vec::new() };
        let held = top["new_retained_bytes"].as_u64().unwrap_or(0);
        failures.extend(
            [
                check(v["mode"] == "diff" && v["pid"] == server.pid(), "mode and pid"),
                check(top["name"] == "Object", "top growth is not Object"),
                check(top["new_count"].as_u64().unwrap_or(0) >= 40, "fewer than 40 new Objects"),
                check(held >= 40 * ARRAY_100K_BYTES, "new Objects hold less than their 40 arrays"),
                check(v["retainers"][0]["instance"] == "Object { name, arr }", "instance"),
                check(
                    steps.iter().any(|(edge, node)| edge == "leaks" && node == "Array"),
                    "no `leaks: Array` step",
                ),
                check(steps.last().is_some_and(|(e, n)| e.starts_with('[') && n == "Object"), "last step"),
                check(
                    stderr.contains("opening node's inspector") && stderr.contains("inspector closed"),
                    &stderr,
                ),
                check(server.inspector_closed(), "port 9229 still open"),
                check(server.get("/").as_deref() == Some("Hello World"), "server does not answer afterwards"),
            ]
            .into_iter()
            .flatten(),
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A class of its own, held in a Map only a closure reaches: it is the top
/// growth with exactly the requests' count, and the path names the Map's
/// variable.
#[test]
fn map_held_class_leak_is_the_top_growth_with_its_map_named() {
    require_root();
    let server = NetnsNode::start(&node_bin("24.21.0"), &[], &workload("heap/map-leak.js"), &[("PORT", "0")]);
    server.load(5, 1);
    let out = diff_with(server.pid(), "2s", || server.load(50, 2));
    let v = heap_record(&out);
    let top = &v["classes"][0];
    assert_eq!(top["name"], "HeaptraceSessionLeak", "{v}");
    assert_eq!(top["new_count"], 50, "{top}");
    assert_eq!(top["count_delta"], 50, "{top}");
    assert_eq!(top["count"], 55, "{top}");
    let r = v["retainers"].as_array().unwrap().iter().find(|r| r["class"] == "HeaptraceSessionLeak").unwrap();
    let steps = names_of(&r["path"]);
    assert!(steps.iter().any(|(edge, node)| edge == "sessions" && node == "Map"), "{steps:?}");
    assert!(r["instance"].as_str().unwrap().starts_with("HeaptraceSessionLeak { id,"), "{r}");
    assert!(server.inspector_closed());
    assert_eq!(server.get("/count").as_deref(), Some("sessions 55\n"));
}

/// The sampling profiler: no snapshot, and the top site still alive is the
/// leaking constructor, called from the function that keeps it.
#[test]
fn sampling_names_the_leaking_function() {
    require_root();
    let server = NetnsNode::start(&node_bin("22.23.3"), &[], &workload("heap/map-leak.js"), &[("PORT", "0")]);
    let mut child = Command::new(heaptrace_bin())
        .args(["heap", &server.pid().to_string(), "--sample", "4s", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = line_channel(child.stderr.take().unwrap());
    poll("sampling started", WAIT, || {
        stderr.recv_timeout(Duration::from_millis(100)).ok().filter(|l| l.contains("sampling allocations"))
    });
    server.load(300, 2);
    let v = heap_record(&child.wait_with_output().unwrap());
    assert_eq!(v["mode"], "sample");
    assert!(v["classes"].as_array().unwrap().is_empty());
    assert!(v["cost"]["snapshot_ms"].as_array().unwrap().is_empty(), "{v}");
    let top = &v["sites"][0];
    assert_eq!(top["function"], "HeaptraceSessionLeak", "{v:#}");
    assert!(top["url"].as_str().unwrap().ends_with("map-leak.js"), "{top}");
    // V8 gives the function's position: the constructor's line.
    assert_eq!((top["line"].as_u64(), top["column"].as_u64()), (Some(18), Some(14)), "{top}");
    assert!(top["stack"][0].as_str().unwrap().starts_with("rememberSession (map-leak.js:"), "{top}");
    // 300 sessions of 1,250 slots: ~3 MB alive; sampling estimates it.
    let live = top["live_bytes"].as_u64().unwrap();
    assert!((1_500_000..6_000_000).contains(&live), "{top}");
    assert!(server.inspector_closed());
}

/// One snapshot, saved: classes by retained size with the leak's Objects
/// among them; the file is DevTools' format, readable by root only.
#[test]
fn summary_with_save_writes_a_private_snapshot() {
    require_root();
    use std::os::unix::fs::PermissionsExt;
    let server = NetnsNode::start(
        &node_bin("20.20.2"),
        &["--max-old-space-size=1024"],
        &workload("diagnosis/express-leak.js"),
        &[("PORT", "0")],
    );
    server.load(30, 2);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("heap-save-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("leak.heapsnapshot");
    let out = heap(&[&server.pid().to_string(), "--save", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(text.contains("classes by retained size"), "{text}");
    let object = text.lines().find(|l| l.trim_start().starts_with("Object ")).expect("an Object line");
    assert!(stderr.contains("mode 0600"), "{stderr}");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let head = std::fs::read(&file).unwrap();
    assert!(head.starts_with(b"{\"snapshot\":"), "{:?}", String::from_utf8_lossy(&head[..40]));
    assert!(text.contains(&format!("Saved {}", file.display())), "{text}");
    // At least the 30 leaked Objects, each holding an array.
    let count: u64 = object.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(count >= 30, "{object}");
    assert!(server.inspector_closed());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Refusals through the command line: a clear message, a non-zero exit,
/// and the process as it was.
#[test]
fn refusals_exit_non_zero_with_a_message() {
    require_root();
    // Not node: nothing is sent to it.
    let mut sleeper = ChildGuard(Command::new("sleep").arg("600").spawn().unwrap());
    let out = heap(&[&sleeper.0.id().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not node"), "{stderr}");
    assert!(sleeper.0.try_wait().unwrap().is_none(), "sleep died");

    // No such process.
    let out = heap(&["4194303"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no process 4194303"), "{stderr}");

    // --disable-sigusr1: SIGUSR1 would not open the inspector.
    let node = node_bin("22.23.3");
    let server =
        NetnsNode::start(&node, &["--disable-sigusr1"], &workload("heap/map-leak.js"), &[("PORT", "0")]);
    let out = heap(&[&server.pid().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--disable-sigusr1"), "{stderr}");
    assert!(server.alive() && server.get("/").is_some());

    // A heap above --max-heap: refused after looking, inspector closed.
    let server = NetnsNode::start(&node, &[], &workload("heap/map-leak.js"), &[("PORT", "0")]);
    let out = heap(&[&server.pid().to_string(), "--max-heap", "1MiB"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("above --max-heap 1.0 MiB") && stderr.contains("--force"), "{stderr}");
    assert!(stderr.contains("inspector closed"), "{stderr}");
    assert!(server.inspector_closed());
    assert!(server.get("/").is_some());

    // A cgroup limit that leaves no room for what V8 needs while it builds
    // a snapshot: the process could be OOM-killed. Refused.
    let mut cgroups = CgroupGuard::new();
    let server = NetnsNode::start(&node, &[], &workload("heap/map-leak.js"), &[("PORT", "0")]);
    let rss = proc_status_bytes(server.pid(), "VmRSS") as u64;
    let name = format!("heaptrace-test-heap-{}", std::process::id());
    // Its memory now, and 32 MiB: far less than a snapshot needs.
    let procs = memory_cgroup(&mut cgroups, &name, rss + (32 << 20));
    std::fs::write(&procs, server.pid().to_string()).unwrap();
    let out = heap(&[&server.pid().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("more memory inside the process") && stderr.contains("OOM-killed"), "{stderr}");
    assert!(stderr.contains("heaptrace-test-heap-"), "names the cgroup: {stderr}");
    assert!(server.inspector_closed());
    assert!(server.get("/").is_some());
    drop(server);
}

/// The tracer's `--on-leak heap-diff`: once the JS heap is judged to leak,
/// a `heap` record with the diff follows, the inspector is closed, and
/// when the process dies its death record and dump carry the diff.
#[test]
fn on_leak_heap_diff_follows_a_js_heap_leak_verdict_into_the_death_dump() {
    require_root();
    let mut cmd = Command::new("unshare");
    cmd.args(["-n", "sh", "-c", "ip link set lo up && exec \"$@\"", "sh"])
        .arg(node_bin("22.23.3"))
        .arg(workload("diagnosis/unbounded-array.js"))
        .envs([("TICK_MS", "25"), ("ARRAY_LEN", "10000")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut node = ChildGuard(cmd.spawn().unwrap());
    let lines = line_channel(node.0.stdout.take().unwrap());
    expect_line_on(&lines, "ready ");
    let pid = node.0.id();
    let dumps = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("heap-dumps-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dumps);
    let extra = ["--on-leak", "heap-diff", "--on-leak-over", "3s", "--dump-dir", dumps.to_str().unwrap()];
    let mut h = Heaptrace::attach(&[pid], &extra);
    let verdict = h.next_matching_within("leak verdict", Duration::from_secs(120), |v| {
        v["type"] == "verdict" && v["pid"] == pid && v["verdict"]["state"] == "leak"
    });
    assert_eq!(verdict["verdict"]["memory"], "js-heap", "{verdict}");
    let report = h.next_matching_within("heap record", Duration::from_secs(60), |v| v["type"] == "heap");
    assert_eq!(report["pid"], pid);
    assert_eq!(report["mode"], "diff");
    assert_eq!(report["classes"][0]["name"], "Object", "{report}");
    let steps = names_of(&report["retainers"][0]["path"]);
    assert!(steps.iter().any(|(edge, _)| edge == "leaks"), "{steps:?}");
    let closed = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "curl", "-sS", "-m", "3", "http://127.0.0.1:9229/json/list"])
        .output()
        .unwrap();
    assert_eq!(closed.status.code(), Some(7), "port 9229 still open");

    // SAFETY: kill() on our own child's pid with a valid signal number.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let death = h.next_matching("death", |v| v["type"] == "death" && v["pid"] == pid);
    assert_eq!(death["heap"]["mode"], "diff", "{death}");
    assert_eq!(death["heap"]["classes"][0]["name"], "Object");
    let dump: Value =
        serde_json::from_str(&std::fs::read_to_string(death["dump_path"].as_str().unwrap()).unwrap())
            .unwrap();
    assert_eq!(dump["heap"], death["heap"]);
    let (status, _) = h.finish();
    assert!(status.success());
    std::fs::remove_dir_all(&dumps).unwrap();
}
