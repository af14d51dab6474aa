//! Privileged tests of host-wide and selection tracing: processes found by
//! command name, cgroup or container, picked up when they start (GC probes
//! included), followed through fork, and forgotten when they exit. Run as
//! root; they never skip.

mod support;

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::Value;
use support::*;

/// Starts heaptrace with a selection and waits for its `start` record, so
/// that everything the test starts afterwards is "started later".
fn start_selection(args: &[&str]) -> Heaptrace {
    let mut h = Heaptrace::start(args);
    h.next_matching("start record", |v| v["type"] == "start");
    h
}

fn gc_records_of(records: &[Value], pid: u32) -> usize {
    records.iter().filter(|r| r["type"] == "gc" && r["pid"] == pid).count()
}

/// Runs `node --trace-gc script` to its end; returns (pid, stdout).
fn run_node(node: &Path, script: &str, pre: Option<PathBuf>) -> (u32, String) {
    let mut cmd = Command::new(node);
    cmd.args(["--trace-gc", repo_root().join("workloads").join(script).to_str().unwrap()]);
    cmd.stdout(Stdio::piped());
    if let Some(cgroup) = pre {
        // Join the cgroup between fork and exec, as a container runtime
        // does: the exec is the first thing heaptrace sees of it.
        // SAFETY: the closure only makes async-signal-safe calls (open,
        // write, getpid, close via std::fs on a pre-built path).
        unsafe {
            cmd.pre_exec(move || std::fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string()));
        }
    }
    let child = cmd.spawn().expect("spawning node");
    let pid = child.id();
    let out = child.wait_with_output().expect("node output");
    assert!(out.status.success(), "node failed");
    (pid, String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn node_started_later_is_picked_up_with_every_gc_from_its_first() {
    require_root();
    let (node, comm) = unique_node("22.23.3", "late");
    let mut h = start_selection(&["--comm", &comm, "--interval", "200ms"]);
    // The first process of a binary heaptrace has not seen is held at exec
    // while its symbols are read; the second finds the binary's probes in
    // place. Both must be seen from their first GC, which comes within
    // ~30 ms of exec.
    let mut runs = Vec::new();
    for _ in 0..2 {
        let (pid, out) = run_node(&node, "gc-startup.js", None);
        h.next_matching("exit of node", |v| v["type"] == "exit" && v["pid"] == pid);
        runs.push((pid, trace_gc_count(&out)));
    }
    let (status, records) = h.stop();
    assert!(status.success());
    for (pid, want) in runs {
        assert!(want >= 3, "the workload should GC at start ({want} GCs)");
        assert_eq!(gc_records_of(&records, pid), want, "GCs of pid {pid} against --trace-gc");
        let attach =
            records.iter().find(|r| r["type"] == "attach" && r["pid"] == pid).expect("attach record");
        assert_eq!(attach["origin"], "exec");
        assert_eq!(attach["gc_probes"], true);
        let p = process_summary(&records, pid);
        assert_eq!(p["exited"], true);
        assert_eq!(int(&p["gc"], "count"), want as i64);
    }
    let start = &of_type(&records, "start")[0];
    assert_eq!(start["follows_new_processes"], true);
    assert_eq!(start["selection"], format!("--comm {comm}"));
}

#[test]
fn forked_children_are_followed_and_churn_leaves_bounded_state() {
    require_root();
    let mut w = Workload::spawn(&workload_bin("churn"), &[]);
    let mut h = start_selection(&["--comm", "churn", "--interval", "100ms"]);
    assert_eq!(int(&h.seen[0], "processes"), 1, "the churn parent is found by the /proc scan");
    const CHILDREN: usize = 200;
    w.send(&format!("go {CHILDREN}"));
    w.expect_line("done");
    h.wait_for_count("child exits", CHILDREN, |r| r["type"] == "exit");
    let (status, records) = h.stop();
    assert!(status.success());
    let parent = w.pid();
    let forks: Vec<&Value> =
        records.iter().filter(|r| r["type"] == "attach" && r["origin"] == "fork").collect();
    let exits = of_type(&records, "exit");
    assert_eq!(forks.len(), CHILDREN, "each child is picked up at fork");
    assert_eq!(exits.len(), CHILDREN, "each child's exit is reported");
    let summary = summary_of(&records);
    assert_eq!(int(summary, "exited_processes"), CHILDREN as i64);
    // Bounded: the parent is the only live process; only the latest exited
    // summaries are kept.
    let state = &summary["state"];
    assert_eq!(int(state, "live_processes"), 1);
    assert!(int(state, "retired_kept") <= 64, "{state}");
    assert_eq!(int(summary, "processes_not_listed"), CHILDREN as i64 - int(state, "retired_kept"));
    // Each child's calls are exact: 3 mmaps and 3 munmaps of its own (the
    // kernel hands over the final counters with the exit).
    let children: Vec<&Value> =
        summary["processes"].as_array().unwrap().iter().filter(|p| p["pid"] != parent).collect();
    assert!(!children.is_empty());
    for c in children {
        assert_eq!((int(c, "mmap_calls"), int(c, "munmap_calls")), (3, 3), "{c}");
        assert_eq!(c["origin"], "fork");
        assert_eq!(c["exited"], true);
    }
    drop(w);
}

#[test]
fn a_cgroup_selection_attributes_gcs_to_each_pods_container() {
    require_root();
    let top = format!("heaptrace-test-{}", std::process::id());
    let root = cgroup_v2_root();
    let mut tree = CgroupGuard::new();
    tree.make(&root.join(&top));
    let pods = [
        ("0f4a8c2e-1b3d-4e5f-8a9b-0c1d2e3f4a5b", "c1".repeat(32), "burstable"),
        ("1f4a8c2e-1b3d-4e5f-8a9b-0c1d2e3f4a5b", "d2".repeat(32), "besteffort"),
    ];
    let dirs: Vec<PathBuf> = pods
        .iter()
        .map(|(uid, id, qos)| tree.make(&root.join(format!("{top}/kubepods/{qos}/pod{uid}/{id}"))))
        .collect();
    let outside = tree.make(&root.join(format!("{top}-outside")));

    let mut h = start_selection(&["--cgroup", &format!("/{top}"), "--interval", "200ms"]);
    let node = node_bin("22.23.3");
    let mut expected = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        // Two processes in the first pod's container, one in the second's.
        for _ in 0..(2 - i) {
            let (pid, out) = run_node(&node, "gc-startup.js", Some(dir.clone()));
            expected.push((i, pid, trace_gc_count(&out)));
        }
    }
    let (stray, _) = run_node(&node, "gc-startup.js", Some(outside.clone()));
    h.wait_for_count("exits of the selected processes", expected.len(), |r| r["type"] == "exit");
    let (status, records) = h.stop();
    drop(tree);
    assert!(status.success());

    assert!(!records.iter().any(|r| r["pid"] == stray), "a process outside the selected cgroup was traced");
    let summary = summary_of(&records);
    for (i, (uid, id, qos)) in pods.iter().enumerate() {
        let want: usize = expected.iter().filter(|(p, ..)| *p == i).map(|(.., n)| n).sum();
        let group = summary["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["container_id"] == *id)
            .unwrap_or_else(|| panic!("no group for container {id}: {}", summary["groups"]));
        assert_eq!(group["pod_uid"], *uid);
        assert_eq!(group["qos"], *qos);
        assert_eq!(int(group, "gc_count"), want as i64, "GCs of pod {i} against --trace-gc");
        assert_eq!(int(group, "exited_processes"), 2 - i as i64);
    }
    for (i, pid, want) in &expected {
        assert_eq!(gc_records_of(&records, *pid), *want);
        let gc = records.iter().find(|r| r["type"] == "gc" && r["pid"] == *pid).unwrap();
        assert_eq!(gc["container_id"], pods[*i].1, "GC records carry the container");
        assert!(int(gc, "cgroup_id") > 0);
        assert_eq!(process_summary(&records, *pid)["container_id"], pods[*i].1);
    }
}

#[test]
fn javascript_heap_out_of_memory_is_reported_once() {
    require_root();
    let (node, comm) = unique_node("22.23.3", "oom");
    let mut h = start_selection(&["--comm", &comm, "--interval", "200ms"]);
    // A 16 MiB old space and a tight leak: V8 aborts within a second or two.
    let out = Command::new(&node)
        .args([
            "--max-old-space-size=16",
            "-e",
            "const a = []; for (;;) a.push({ s: 'x'.repeat(64) + a.length });",
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("JavaScript heap out of memory"), "node did not run out of heap: {stderr}");
    let exit = h.next_matching("exit", |v| v["type"] == "exit");
    let pid = exit["pid"].as_u64().unwrap() as u32;
    let (status, records) = h.stop();
    assert!(status.success());
    let ooms: Vec<&Value> = records.iter().filter(|r| r["type"] == "oom" && r["pid"] == pid).collect();
    assert_eq!(ooms.len(), 1, "{ooms:?}");
    assert_eq!(ooms[0]["source"], "v8");
    let p = process_summary(&records, pid);
    assert_eq!(p["v8_out_of_memory"], true);
    assert!(p["finding"].as_str().unwrap().contains("JavaScript heap out of memory"));
}
