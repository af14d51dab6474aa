//! Privileged integration tests: the real eBPF programs on the real kernel,
//! tracing real processes. Run as root, one at a time (scripts/test.sh runs
//! them with --test-threads=1). They never skip.

mod support;

use std::{
    os::unix::process::CommandExt,
    process::{Command, Stdio},
};

use serde_json::Value;
use support::*;

/// Runs memwork's sequence under heaptrace and checks every figure whose
/// true value is known, for one memory-hook mechanism.
fn assert_exact_figures(mem_hook: &str) {
    require_root();
    let mut w = Workload::memwork();
    let pid = w.pid();
    let mut h = Heaptrace::attach(&[pid], &["--mem-hook", mem_hook]);
    let before = h.next_snapshot(pid);

    w.run_sequence();
    let after = h.fresh_snapshot(pid);
    // The workload is idle now: its /proc figures hold still.
    let vm_size = proc_status_bytes(pid, "VmSize");
    let (rss, anon, file) = (
        proc_status_bytes(pid, "VmRSS"),
        proc_status_bytes(pid, "RssAnon"),
        proc_status_bytes(pid, "RssFile"),
    );
    let after2 = h.next_snapshot(pid);

    assert_eq!(delta(&before, &after, "mapped_bytes"), memwork::MAPPED, "mapped_bytes delta");
    assert_eq!(delta(&before, &after, "committed_bytes"), memwork::COMMITTED, "committed_bytes delta");
    assert_eq!(delta(&before, &after, "brk_bytes"), memwork::BRK, "brk_bytes delta");
    assert_eq!(delta(&before, &after, "mapped_file_bytes"), memwork::MAPPED_FILE, "mapped_file_bytes delta");
    assert_eq!(int(&after, "mapped_growth_bytes"), memwork::MAPPED);
    assert_eq!(int(&after, "committed_growth_bytes"), memwork::COMMITTED);
    assert_eq!(int(&after, "brk_growth_bytes"), memwork::BRK);
    // Calls, from the kernel's counters: 8 + reservation + file; one each of
    // munmap, mremap, mprotect; brk: page alignment (maybe) + grow + shrink.
    assert_eq!(delta(&before, &after, "mmap_calls"), 10);
    assert_eq!(delta(&before, &after, "munmap_calls"), 1);
    assert_eq!(delta(&before, &after, "mremap_calls"), 1);
    assert_eq!(delta(&before, &after, "mprotect_calls"), 1);
    let brk_calls = delta(&before, &after, "brk_calls");
    assert!((2..=3).contains(&brk_calls), "brk calls {brk_calls}");

    assert_eq!(int(&after2, "vm_bytes"), vm_size, "vm_bytes equals VmSize");
    let within_1pct = |ours: i64, theirs: i64, what: &str| {
        let tolerance = theirs / 100 + 4096;
        assert!((ours - theirs).abs() <= tolerance, "{what}: heaptrace {ours} vs /proc {theirs}");
    };
    within_1pct(int(&after2, "rss_bytes"), rss, "VmRSS");
    within_1pct(int(&after2, "rss_anon_bytes"), anon, "RssAnon");
    within_1pct(int(&after2, "rss_file_bytes"), file, "RssFile");
    // RSS grew by at least the pages memwork touched: 8 MiB - 256 KiB + 1 MiB + 2 MiB more.
    assert!(int(&after2, "rss_growth_bytes") >= 10 * MIB, "rss growth {}", int(&after2, "rss_growth_bytes"));

    let (status, records) = h.stop();
    assert!(status.success(), "heaptrace exit status {status}");
    let large: Vec<(String, i64)> = records
        .iter()
        .filter(|r| r["type"] == "mapping" && r["pid"] == pid)
        .map(|r| (r["op"].as_str().unwrap().to_owned(), int(r, "len")))
        .collect();
    let mut expected = vec![("mmap".to_owned(), MIB); 8];
    expected.push(("mmap".into(), 4 * MIB));
    expected.push(("mremap".into(), 3 * MIB));
    assert_eq!(large, expected, "large mappings");
    assert_eq!(large.len(), memwork::LARGE_MAPPINGS);

    let p = process_summary(&records, pid);
    assert_eq!(int(p, "committed_growth_bytes"), memwork::COMMITTED);
    assert_eq!(int(p, "brk_growth_bytes"), memwork::BRK);
    assert!(p["finding"].as_str().unwrap().contains("1 MiB chunks"), "finding: {}", p["finding"]);
    assert_eq!(summary_of(&records)["dropped_events"], 0);
    w.exit();
}

#[test]
fn exact_figures_with_btf_tracepoint() {
    assert_exact_figures("btf-tracepoint");
}

#[test]
fn exact_figures_with_raw_tracepoint() {
    assert_exact_figures("raw-tracepoint");
}

#[test]
fn exact_figures_with_classic_tracepoints() {
    assert_exact_figures("tracepoint");
}

#[test]
fn auto_hook_picks_the_btf_tracepoint_here() {
    require_root();
    let w = Workload::memwork();
    let h = Heaptrace::attach(&[w.pid()], &[]);
    let (status, records) = h.stop();
    assert!(status.success());
    // This kernel has BTF, so the cheapest hook loads.
    assert_eq!(summary_of(&records)["mem_hook"], "BTF tracepoint sys_exit");
}

#[test]
fn two_traced_processes_are_kept_apart_and_an_untraced_one_is_ignored() {
    require_root();
    let mut a = Workload::memwork();
    let mut b = Workload::memwork();
    let mut untraced = Workload::memwork();
    let mut h = Heaptrace::attach(&[a.pid(), b.pid()], &[]);
    let a0 = h.next_snapshot(a.pid());
    let b0 = h.next_snapshot(b.pid());

    // a runs the sequence twice, b once, the untraced one once.
    a.run_sequence();
    a.run_sequence();
    b.run_sequence();
    untraced.run_sequence();
    let a1 = h.fresh_snapshot(a.pid());
    let b1 = h.fresh_snapshot(b.pid());

    assert_eq!(delta(&a0, &a1, "committed_bytes"), 2 * memwork::COMMITTED);
    assert_eq!(delta(&a0, &a1, "mapped_bytes"), 2 * memwork::MAPPED);
    assert_eq!(delta(&a0, &a1, "mmap_calls"), 20);
    assert_eq!(delta(&b0, &b1, "committed_bytes"), memwork::COMMITTED);
    assert_eq!(delta(&b0, &b1, "mmap_calls"), 10);

    let (status, records) = h.stop();
    assert!(status.success());
    let untraced_pid = untraced.pid();
    assert!(records.iter().all(|r| r["pid"] != untraced_pid), "the untraced process appears in the output");
    assert_eq!(summary_of(&records)["processes"].as_array().unwrap().len(), 2);
}

#[test]
fn a_process_that_exits_is_reported_and_the_others_go_on() {
    require_root();
    let leaving = Workload::memwork();
    let mut staying = Workload::memwork();
    let (leaving_pid, staying_pid) = (leaving.pid(), staying.pid());
    let mut h = Heaptrace::attach(&[leaving_pid, staying_pid], &[]);

    leaving.exit();
    let exit = h.next_matching("exit record", |r| r["type"] == "exit");
    assert_eq!(exit["pid"], leaving_pid);
    assert_eq!(exit["oom_killed"], false);
    // Tracing goes on for the other one, which still behaves exactly.
    let s0 = h.next_snapshot(staying_pid);
    staying.run_sequence();
    let s1 = h.fresh_snapshot(staying_pid);
    assert_eq!(delta(&s0, &s1, "committed_bytes"), memwork::COMMITTED);
    assert!(
        h.seen
            .iter()
            .skip_while(|r| r["type"] != "exit")
            .all(|r| r["type"] != "snapshot" || r["pid"] != leaving_pid),
        "no snapshots of an exited process"
    );

    // When the last one exits, heaptrace stops by itself, with a summary.
    staying.exit();
    let (status, records) = h.finish();
    assert!(status.success(), "exit status {status}");
    assert_eq!(records.iter().filter(|r| r["type"] == "exit").count(), 2);
    assert_eq!(process_summary(&records, leaving_pid)["exited"], true);
    assert_eq!(int(process_summary(&records, staying_pid), "committed_growth_bytes"), memwork::COMMITTED);
}

#[test]
fn a_pid_that_does_not_exist_is_a_clear_error() {
    require_root();
    let out = Command::new(heaptrace_bin()).args(["--pid", "4194303"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no process with pid 4194303"), "stderr: {stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_thread_id_is_not_taken_for_a_process() {
    require_root();
    // node has helper threads; any of their tids is not a process.
    let mut node = Command::new("node").args(["-e", "setTimeout(() => {}, 20000)"]).spawn().expect("node");
    let pid = node.id();
    let tid = poll("a thread of node", WAIT, || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|&t| t != pid)
    });
    let out = Command::new(heaptrace_bin()).args(["--pid", &tid.to_string()]).output().unwrap();
    let _ = node.kill();
    let _ = node.wait();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("no process with pid {tid}")));
}

#[test]
fn without_privileges_it_says_what_to_do() {
    require_root();
    let w = Workload::memwork();
    let out = Command::new(heaptrace_bin())
        .args(["--pid", &w.pid().to_string()])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("run it as root") && stderr.contains("CAP_BPF"), "stderr: {stderr}");
}

#[test]
fn ring_buffer_overflow_is_counted_and_call_counts_stay_exact() {
    require_root();
    // A one-page ring buffer cannot hold a storm's events between drains.
    const ITERATIONS: i64 = 50_000;
    let mut storm = Workload::spawn(&workload_bin("storm"), &[&ITERATIONS.to_string()]);
    let pid = storm.pid();
    let mut h = Heaptrace::attach(&[pid], &["--ring-buffer", "4KiB"]);
    let before = h.next_snapshot(pid);
    storm.send("go");
    storm.expect_line("ns_per_iter");
    let after = h.fresh_snapshot(pid);
    // Counters live in the kernel, not the stream: still exact.
    assert_eq!(delta(&before, &after, "mmap_calls"), ITERATIONS);
    assert_eq!(delta(&before, &after, "munmap_calls"), ITERATIONS);
    let (status, records) = h.stop();
    assert!(status.success());
    let dropped: Vec<&Value> = records.iter().filter(|r| r["type"] == "dropped").collect();
    assert!(!dropped.is_empty() && dropped.iter().all(|d| d["reason"] == "ring_buffer_full"));
    let lost = int(summary_of(&records), "dropped_events");
    let reported: i64 = records.iter().filter(|r| r["type"] == "dropped").map(|r| int(r, "count")).sum();
    assert_eq!(lost, reported, "every loss is reported");
    assert!(lost > 0);
}

#[test]
fn text_output_and_a_closed_pipe() {
    require_root();
    let w = Workload::memwork();
    // `heaptrace ... | head -1`: the reader leaves; heaptrace exits 0, quietly.
    let mut child = Command::new(heaptrace_bin())
        .args(["--pid", &w.pid().to_string(), "--interval", "50ms", "--duration", "5s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut start = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut start).unwrap();
    assert!(start.contains(&format!("tracing 1 process (--pid {})", w.pid())), "start line: {start}");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert!(line.contains(&format!("{} memwork", w.pid())) && line.contains("rss"), "text line: {line}");
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "status {}", out.status);
    // Quietly: no error, no panic (the only line is the notice that memwork
    // has no V8, so memory alone is traced).
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("error")
            && !stderr.contains("panick")
            && !stderr.to_lowercase().contains("broken pipe"),
        "stderr: {stderr}"
    );
    assert_eq!(stderr.lines().filter(|l| !l.contains("tracing memory only")).count(), 0, "stderr: {stderr}");
}

#[test]
fn a_leaking_node_process_shows_growth() {
    require_root();
    let script = repo_root().join("workloads/leak.js");
    let mut node = Command::new("node")
        .arg(&script)
        .args(["30", "40"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("node is needed (scripts/setup.sh installs it)");
    // Attach once it serves (its first line), not while node boots.
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(node.stdout.as_mut().unwrap()), &mut first)
        .unwrap();
    assert!(first.starts_with("leak.js pid"), "{first}");
    let pid = node.id();
    let h = Heaptrace::start(&["--pid", &pid.to_string(), "--interval", "500ms", "--duration", "6s"]);
    let (status, records) = h.finish();
    let _ = node.kill();
    let _ = node.wait();
    assert!(status.success());
    let snaps: Vec<&Value> = records.iter().filter(|r| r["type"] == "snapshot").collect();
    assert!(snaps.len() >= 8, "{} snapshots", snaps.len());
    // ~20 MiB/s of cache entries: RSS and committed memory both climb.
    let (first, last) = (snaps[0], snaps[snaps.len() - 1]);
    let rss_growth = delta(first, last, "rss_bytes");
    assert!(rss_growth > 30 * MIB, "rss grew only {rss_growth}");
    assert!(
        int(last, "committed_growth_bytes") > 10 * MIB,
        "committed growth {}",
        last["committed_growth_bytes"]
    );
    assert!(int(last, "mmap_calls") > 0 && int(last, "mprotect_calls") > 0);
    let p = process_summary(&records, pid);
    assert!(p["finding"].as_str().unwrap().starts_with("RSS grew"), "finding: {}", p["finding"]);
    assert_eq!(p["comm"], "node");
}

#[test]
fn a_process_in_a_kubernetes_shaped_cgroup_is_labelled_with_its_pod_and_container() {
    require_root();
    // A real cgroup in the v2 hierarchy, named as the kubelet + containerd
    // name a burstable pod's container.
    let uid = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
    let id = "a3f5c8e1d2b4f6a8c0e2d4f6b8a0c2e4f6a8b0c2d4e6f8a0b2c4d6e8f0a2c4e6";
    let pod = format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
        uid.replace('-', "_")
    );
    // Removed when the test ends, even if it fails (after the workload:
    // locals drop in reverse order).
    let mut cgroups = CgroupGuard::new();
    let dir = cgroups.make(&cgroup_v2_root().join(&pod).join(format!("cri-containerd-{id}.scope")));
    let mut w = Workload::memwork();
    std::fs::write(dir.join("cgroup.procs"), w.pid().to_string()).expect("move the workload in");
    use std::os::unix::fs::MetadataExt;
    let cgroup_inode = std::fs::metadata(&dir).unwrap().ino();

    let mut h = Heaptrace::attach(&[w.pid()], &[]);
    w.run_sequence();
    let s = h.fresh_snapshot(w.pid());
    let (status, records) = h.stop();
    drop(w);
    drop(cgroups);
    assert!(status.success());
    assert_eq!(s["runtime"], "containerd");
    assert_eq!(s["container_id"], id);
    assert_eq!(s["pod_uid"], uid);
    assert_eq!(s["qos"], "burstable");
    // The kernel stamps events with the v2 cgroup id: the directory's inode.
    assert_eq!(s["cgroup_id"].as_u64(), Some(cgroup_inode));
    assert_eq!(process_summary(&records, s["pid"].as_u64().unwrap() as u32)["container_id"], id);
}
