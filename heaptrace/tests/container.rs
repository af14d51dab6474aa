//! Privileged test with a real container: podman + runc running node from a
//! local rootfs (scripts/container-rootfs.sh; no registry needed), with a
//! memory limit. heaptrace must find it by container id and host-wide,
//! label it with the id podman printed, read the limit that was set, and
//! count the same GCs as `--trace-gc` inside the container.

mod support;

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{Receiver, channel},
    time::{Duration, Instant},
};

use serde_json::Value;
use support::*;

const LIMIT: i64 = 256 * MIB;

/// `podman run -i` of workloads/gc-heavy.js under --trace-gc.
struct Container {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    id: String,
    /// Everything it printed.
    out: Vec<String>,
}

impl Container {
    fn start(rootfs: &std::path::Path) -> Self {
        let cidfile = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cid-{}", std::process::id()));
        let _ = std::fs::remove_file(&cidfile); // podman refuses an existing one
        let mut child = Command::new("podman")
            .args(["--runtime", "/usr/sbin/runc", "--cgroup-manager", "cgroupfs", "run", "--rm", "-i"])
            .args(["--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"])
            .args(["--memory", "256m", "--memory-swap", "256m", "--cidfile"])
            .arg(&cidfile)
            .arg("--rootfs")
            .arg(rootfs)
            .args(["/usr/bin/node", "--trace-gc", "/app/gc-heavy.js", "2"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("podman (scripts/setup.sh installs it)");
        let (tx, lines) = channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut c = Self { child, stdin, lines, id: String::new(), out: Vec::new() };
        c.expect("READY");
        c.id = std::fs::read_to_string(&cidfile).expect("podman's cidfile").trim().to_owned();
        let _ = std::fs::remove_file(&cidfile);
        assert_eq!(c.id.len(), 64, "container id {:?}", c.id);
        c
    }

    fn expect(&mut self, prefix: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    let done = line.starts_with(prefix);
                    self.out.push(line);
                    if done {
                        return;
                    }
                }
                Err(e) => panic!("the container did not print {prefix:?}: {e:?}; printed {:?}", self.out),
            }
        }
    }

    /// Lets the workload run to its end; returns its --trace-gc GC count
    /// from GO on, and GO's time (Unix seconds, a millisecond early). V8
    /// may run an idle GC task while node waits before GO, before
    /// heaptrace has attached: not part of the run (as in tests/gc.rs).
    fn run_to_end(mut self) -> (usize, f64) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "go").unwrap();
        stdin.flush().unwrap();
        self.expect("DONE");
        self.stdin.take();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "podman run: {status}");
        // The reader thread has the rest (nothing follows DONE but exit).
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.out.push(line);
        }
        let go = self.out.iter().position(|l| l.starts_with("GO ")).expect("the workload printed GO");
        let go_ms: f64 = self.out[go]["GO ".len()..].trim().parse().expect("GO <ms>");
        (trace_gc_count(&self.out[go + 1..].join("\n")), go_ms / 1000.0 - 0.001)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("podman").args(["rm", "-f", "-t", "0", &self.id]).output();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The node process of the container, from heaptrace's attach records.
fn container_node<'a>(records: &'a [Value], id: &str) -> &'a Value {
    records
        .iter()
        .rfind(|r| r["type"] == "attach" && r["container_id"] == id && r["comm"] == "node")
        .unwrap_or_else(|| panic!("no attach record for node in container {id}"))
}

/// Waits for the exit record of the container's node: everything before it
/// (its GCs) has been drained.
fn wait_for_exit(h: &mut Heaptrace, id: &str) {
    h.next_matching("exit of the container's node", |r| {
        r["type"] == "exit" && r["container_id"] == id && r["comm"] == "node"
    });
}

fn check(records: &[Value], id: &str, (trace_gc, go_s): (usize, f64)) {
    let node = container_node(records, id);
    let pid = node["pid"].as_u64().unwrap() as u32;
    assert_eq!(node["runtime"], "podman");
    assert_eq!(node["ns_pid"], 1, "node is PID 1 in the container's namespace");
    assert_eq!(node["gc_probes"], true);
    let gcs = records
        .iter()
        .filter(|r| r["type"] == "gc" && r["pid"] == pid && r["ts"].as_f64().unwrap() >= go_s)
        .count();
    assert!(trace_gc > 10, "the workload should GC ({trace_gc})");
    assert_eq!(gcs, trace_gc, "GCs against --trace-gc inside the container");
    // The group: the limit set with --memory, read from the cgroup (v1 on
    // this hybrid host, v2 elsewhere).
    let group = records
        .iter()
        .rfind(|r| r["type"] == "group" && r["container_id"] == id && !r["memory_limit_bytes"].is_null())
        .expect("a container record with the cgroup's memory figures");
    assert_eq!(int(group, "memory_limit_bytes"), LIMIT);
    let usage = int(group, "memory_usage_bytes");
    assert!(usage > 5 * MIB && usage < LIMIT, "usage {usage}");
    assert_eq!(int(group, "memory_headroom_bytes"), LIMIT - usage);
    assert!(int(group, "gc_count") > 0);
    assert!(int(group, "cgroup_id") > 0);
}

#[test]
fn a_podman_container_is_found_by_id_and_host_wide() {
    require_root();
    let rootfs = container_rootfs();

    // By id prefix, attached while the container runs.
    let c = Container::start(&rootfs);
    let id = c.id.clone();
    let mut h = Heaptrace::start(&["--container", &id[..12], "--interval", "200ms"]);
    let start = h.next_matching("start record", |v| v["type"] == "start");
    assert_eq!(int(&start, "processes"), 1, "only the container's node is selected");
    let trace_gc = c.run_to_end();
    wait_for_exit(&mut h, &id);
    let (status, records) = h.stop();
    assert!(status.success());
    check(&records, &id, trace_gc);

    // Host-wide, started before the container: node is picked up at exec.
    let mut h = Heaptrace::start(&["--all", "--interval", "500ms"]);
    h.next_matching("start record", |v| v["type"] == "start");
    let c = Container::start(&rootfs);
    let id = c.id.clone();
    let trace_gc = c.run_to_end();
    wait_for_exit(&mut h, &id);
    let (status, records) = h.stop();
    assert!(status.success());
    assert_eq!(container_node(&records, &id)["origin"], "exec");
    check(&records, &id, trace_gc);
}
