//! Privileged GC tests: heaptrace's pauses against `node --trace-gc`, GC by
//! GC, on every Node build scripts/fetch-node.sh provides. Run as root; they
//! never skip (a missing build fails with the command that fetches it).

mod support;

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    sync::mpsc::{Receiver, channel},
    thread,
};

use serde_json::Value;
use support::*;

/// One Node build: how to run it.
struct NodeBuild {
    name: &'static str,
    node: PathBuf,
    /// Debian's build: its root (libraries and /usr/share/nodejs builtins).
    debian_root: Option<PathBuf>,
    /// `--trace-gc` prints pauses with 0.1 ms resolution on V8 10.2.
    pause_tolerance_ms: f64,
    /// V8 >= 12.4 passes its own pause timestamps (Node 22+).
    v8_timestamps: bool,
}

impl NodeBuild {
    fn command(&self, args: &[&std::ffi::OsStr]) -> Command {
        let mut cmd = match &self.debian_root {
            Some(root) => debian_node_command(root, &self.node),
            None => Command::new(&self.node),
        };
        cmd.args(args);
        cmd
    }
}

fn build(name: &'static str) -> NodeBuild {
    let cache = node_cache();
    let b = if name == "debian-18" {
        NodeBuild {
            name,
            node: cache.join("debian-18/usr/bin/node"),
            debian_root: Some(cache.join("debian-18")),
            pause_tolerance_ms: 0.1,
            v8_timestamps: false,
        }
    } else {
        NodeBuild {
            name,
            node: cache.join(name).join("bin/node"),
            debian_root: None,
            pause_tolerance_ms: if name.starts_with("18.") { 0.1 } else { 0.02 },
            v8_timestamps: !["18.", "20."].iter().any(|v| name.starts_with(v)),
        }
    };
    assert!(b.node.exists(), "{} is missing: run scripts/fetch-node.sh", b.node.display());
    b
}

/// One line of `--trace-gc`.
#[derive(Debug)]
struct TraceGcLine {
    /// `0x...` from `[pid:0x...]`: the isolate (one per thread).
    isolate: String,
    major: bool,
    heap_before_mb: f64,
    heap_after_mb: f64,
    pause_ms: f64,
    /// Major GCs: "(+ X ms in N steps since start of marking)".
    marking: Option<(f64, u32)>,
}

/// Parses the GC lines of `node --trace-gc` output, e.g.
/// `[1:0x1]  39 ms: Scavenge 4.4 (5.1) -> 3.6 (6.1) MB, pooled: 0 MB, 1.45 / 0.00 ms  (...) allocation failure;`
/// `[1:0x1] 1453 ms: Mark-sweep 15.2 (24.6) -> 10.6 (28.1) MB, 9.7 / 0.0 ms  (+ 9.2 ms in 91 steps ...`
fn parse_trace_gc(line: &str) -> Option<TraceGcLine> {
    let isolate = line.strip_prefix('[')?.split(']').next()?.split(':').nth(1)?.to_owned();
    let rest = line.split(" ms: ").nth(1)?;
    let (name, sizes) = rest.split_once(|c: char| c.is_ascii_digit()).map(|(n, _)| n).zip(Some(rest))?;
    let name = name.trim();
    // "Scavenge", "Scavenge (interleaved)", "Minor Mark-Sweep", "Mark-sweep",
    // "Mark-Compact", "Incremental Mark-Compact", "Mark-Compact (reduce)".
    let major = if name.starts_with("Scavenge") || name.starts_with("Minor") {
        false
    } else if name.contains("Mark-sweep") || name.contains("Mark-Compact") {
        true
    } else {
        return None;
    };
    let numbers = &sizes[name.len()..];
    let (heap, rest) = numbers.split_once(" MB, ")?;
    let mut heap_parts = heap.split_whitespace();
    let heap_before_mb = heap_parts.next()?.parse().ok()?;
    let heap_after_mb = heap.split("->").nth(1)?.split_whitespace().next()?.parse().ok()?;
    // Node 22+ put "pooled: N MB, " before the pause.
    let rest = if rest.starts_with("pooled:") { rest.split_once(" MB, ")?.1 } else { rest };
    let pause_ms = rest.split_whitespace().next()?.parse().ok()?;
    let marking = line.split("(+ ").nth(1).and_then(|m| {
        let (ms, rest) = m.split_once(" ms in ")?;
        Some((ms.parse().ok()?, rest.split_whitespace().next()?.parse().ok()?))
    });
    Some(TraceGcLine { isolate, major, heap_before_mb, heap_after_mb, pause_ms, marking })
}

fn lines(out: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Runs workloads/gc-heavy.js under `--trace-gc` with heaptrace attached
/// before it starts; compares every pause.
/// Returns how many threads had GCs.
fn compare_with_trace_gc(b: &NodeBuild, extra_node_args: &[&str], script_args: &[&str]) -> usize {
    require_root();
    let script = repo_root().join("workloads/gc-heavy.js");
    use std::ffi::OsStr;
    let mut args: Vec<&OsStr> = vec![OsStr::new("--trace-gc")];
    args.extend(extra_node_args.iter().map(OsStr::new));
    args.push(script.as_os_str());
    args.push(OsStr::new("2"));
    args.extend(script_args.iter().map(OsStr::new));
    let mut node = b.command(&args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("start node");
    let out = lines(node.stdout.take().unwrap());
    let pid = node.id();
    // Attach once node has booted and waits: its bootstrap GCs come before.
    while out.recv_timeout(WAIT).unwrap_or_else(|_| panic!("{}: node did not start", b.name)) != "READY" {}
    let h = Heaptrace::attach(&[pid], &[]);

    // Go, and collect every --trace-gc line from here to node's exit;
    // heaptrace stops by itself when node exits, so both saw the same run.
    use std::io::Write;
    let mut stdin = node.stdin.take().unwrap();
    writeln!(stdin, "go").unwrap();
    let mut trace = Vec::new();
    let mut go_ms: Option<f64> = None;
    while let Ok(line) = out.recv_timeout(WAIT) {
        if let Some(ms) = line.strip_prefix("GO ") {
            go_ms = ms.parse().ok();
        } else if go_ms.is_some() {
            trace.extend(parse_trace_gc(&line));
        }
    }
    // V8 may run a GC task while node idles before GO: not part of the run.
    let go_s = go_ms.expect("the workload printed GO") / 1000.0 - 0.001;
    let status = node.wait().unwrap();
    assert!(status.success(), "{}: node exited with {status}", b.name);
    let (status, records) = h.finish();
    assert!(status.success());

    let ours: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "gc" && r["pid"] == pid && r["ts"].as_f64().unwrap() >= go_s)
        .collect();
    let count = |major: bool| trace.iter().filter(|t| t.major == major).count();
    let ours_count = |kind: &str| ours.iter().filter(|r| r["kind"] == kind).count();
    assert!(trace.len() > 50, "{}: only {} GCs in --trace-gc", b.name, trace.len());
    assert_eq!(ours_count("minor"), count(false), "{}: minor GC count", b.name);
    assert_eq!(ours_count("major"), count(true), "{}: major GC count", b.name);
    assert_eq!(ours.len(), trace.len(), "{}: GC count", b.name);

    // Per isolate (thread): the same number of GCs, in the same order.
    let mut isolates: Vec<&str> = trace.iter().map(|t| t.isolate.as_str()).collect();
    isolates.dedup();
    isolates.sort_unstable();
    isolates.dedup();
    let mut tids: Vec<u64> = ours.iter().map(|r| r["tid"].as_u64().unwrap()).collect();
    tids.sort_unstable();
    tids.dedup();
    assert_eq!(isolates.len(), tids.len(), "{}: isolates with GCs vs threads with GCs", b.name);
    let mut per_isolate: Vec<usize> =
        isolates.iter().map(|i| trace.iter().filter(|t| t.isolate == *i).count()).collect();
    let mut per_thread: Vec<usize> =
        tids.iter().map(|tid| ours.iter().filter(|r| r["tid"].as_u64() == Some(*tid)).count()).collect();
    per_isolate.sort_unstable();
    per_thread.sort_unstable();
    assert_eq!(per_thread, per_isolate, "{}: GCs per thread vs per isolate", b.name);
    // Pair each isolate with the thread whose pauses match its own best
    // (two isolates may have the same number of GCs), then compare GC by GC.
    let mut pairs: Vec<(&TraceGcLine, &Value)> = Vec::new();
    let mut unmatched_tids = tids.clone();
    for isolate in &isolates {
        let t_gcs: Vec<&TraceGcLine> = trace.iter().filter(|t| t.isolate == *isolate).collect();
        let of_tid = |tid: u64| ours.iter().filter(move |r| r["tid"].as_u64() == Some(tid)).copied();
        let mismatch = |tid: u64| -> f64 {
            t_gcs
                .iter()
                .zip(of_tid(tid))
                .map(|(t, r)| (r["pause_ns"].as_f64().unwrap() / 1e6 - t.pause_ms).abs())
                .sum()
        };
        let pos = (0..unmatched_tids.len())
            .filter(|&i| of_tid(unmatched_tids[i]).count() == t_gcs.len())
            .min_by(|&a, &b| mismatch(unmatched_tids[a]).total_cmp(&mismatch(unmatched_tids[b])))
            .expect("a thread with as many GCs");
        let tid = unmatched_tids.remove(pos);
        pairs.extend(t_gcs.into_iter().zip(of_tid(tid)));
    }

    let mib = 1024.0 * 1024.0;
    let mut outside_tolerance = Vec::new();
    let mut marking_cycles = 0;
    // Marking times outside the bounds below: a stall of the VM lands in one
    // cycle's figure or the other's now and then (seen once in a few CI
    // runs, either way); a bug (lost steps, steps carried across cycles)
    // would put most cycles out.
    let mut marking_outside = Vec::new();
    for (i, (t, r)) in pairs.into_iter().enumerate() {
        assert_eq!(r["kind"] == "major", t.major, "{}: GC #{i} kind: {r} vs {t:?}", b.name);
        let pause_ms = r["pause_ns"].as_f64().unwrap() / 1e6;
        let error = (pause_ms - t.pause_ms).abs();
        if error > b.pause_tolerance_ms {
            outside_tolerance.push(format!("GC #{i}: {pause_ms:.4} ms vs --trace-gc {} ms", t.pause_ms));
        }
        assert!(
            error <= 5.0 * b.pause_tolerance_ms,
            "{}: GC #{i} pause {pause_ms} ms vs --trace-gc {} ms",
            b.name,
            t.pause_ms
        );
        // --trace-gc prints MiB with one decimal: equal after rounding.
        let before = r["heap_before_bytes"].as_f64().unwrap() / mib;
        let after = r["heap_after_bytes"].as_f64().unwrap() / mib;
        assert!(
            (before - t.heap_before_mb).abs() <= 0.051,
            "{}: GC #{i} heap before {before} vs {t:?}",
            b.name
        );
        assert!((after - t.heap_after_mb).abs() <= 0.051, "{}: GC #{i} heap after {after} vs {t:?}", b.name);
        assert_ne!(r["reason"], "unknown", "{}: GC #{i} has no reason", b.name);
        // Incremental marking of the cycle a major GC ends. V8 counts steps
        // up to V8 11.3 (12.x prints 0): those must be equal. Times differ by
        // construction: V8 times its scope inside each Step, heaptrace the
        // whole call from outside, traps included, on a VM whose stalls
        // land in either. Typically within 5 %; an occasional cycle is well
        // above. The bounds catch what would be a bug (lost steps, or steps
        // carried across cycles).
        if let Some((marking_ms, steps)) = t.marking {
            let ours_steps = r["marking_steps"].as_u64().unwrap();
            if steps > 0 && ours_steps > 0 {
                assert_eq!(ours_steps, u64::from(steps), "{}: GC #{i} marking steps", b.name);
            }
            // With workers there are more isolates than CPUs, so threads are
            // preempted inside traps: times are compared single-isolate.
            if ours_steps > 0 && !script_args.contains(&"--workers") {
                let ours_ms = r["marking_step_ns"].as_f64().unwrap() / 1e6;
                if !(ours_ms >= 0.9 * marking_ms - 0.2 && ours_ms <= 2.0 * marking_ms + 1.0) {
                    marking_outside.push(format!("GC #{i}: {ours_ms:.2} ms vs --trace-gc {marking_ms} ms"));
                }
                marking_cycles += 1;
            }
        }
    }
    // V8 >= 12.4 passes its own timestamps: every pause must match. Older V8
    // is timed by the kernel at the two uprobes, whose trap latency on a busy
    // VM occasionally jitters by tens of µs: 99 % must match.
    let allowed = if b.v8_timestamps { 0 } else { trace.len() / 100 };
    assert!(
        outside_tolerance.len() <= allowed,
        "{}: {} of {} pauses outside {} ms: {:?}",
        b.name,
        outside_tolerance.len(),
        trace.len(),
        b.pause_tolerance_ms,
        outside_tolerance
    );
    // The workload's majors are incremental: their marking was seen.
    if trace.iter().any(|t| t.marking.is_some())
        && !script_args.contains(&"--force-gc")
        && !script_args.contains(&"--workers")
    {
        assert!(marking_cycles > 0, "{}: no incremental-marking cycle compared", b.name);
    }
    assert!(
        marking_outside.len() <= marking_cycles / 10,
        "{}: {} of {marking_cycles} marking times out of bounds: {marking_outside:?}",
        b.name,
        marking_outside.len()
    );
    // The summary counts every pause heaptrace saw, idle ones before GO too.
    let all = records.iter().filter(|r| r["type"] == "gc" && r["pid"] == pid).count();
    assert_eq!(int(&process_summary(&records, pid)["gc"], "count"), all as i64);
    tids.len()
}

#[test]
fn trace_gc_parser_reads_every_shape() {
    let cases = [
        "[1:0x1]       39 ms: Scavenge 4.4 (5.1) -> 3.6 (6.1) MB, pooled: 0 MB, 1.45 / 0.00 ms  (average mu = 1.000, current mu = 1.000) allocation failure; ",
        "[1:0x1]     1453 ms: Mark-sweep 15.2 (24.6) -> 10.6 (28.1) MB, 9.7 / 0.0 ms  (+ 9.2 ms in 91 steps since start of marking) finalize incremental marking via task; GC in old space requested",
        "[1:0x1]     1513 ms: Incremental Mark-Compact 20.7 (29.8) -> 13.9 (29.4) MB, pooled: 0.0 MB, 5.57 / 0.00 ms (+ 5.5 ms in 150 steps) finalize",
        "[1:0x1]       43 ms: Scavenge 4.4 (6.1) -> 3.7 (6.4) MB, 1.46 / 0.00 ms  (average mu = 1.000) allocation failure;",
        "[1:0x2]      407 ms: Scavenge (interleaved) 31.7 (50.5) -> 18.2 (50.5) MB, pooled: 0 MB, 1.00 / 0.00 ms  (average mu = 0.774) task; ",
    ];
    let parsed: Vec<TraceGcLine> = cases.iter().map(|c| parse_trace_gc(c).expect(c)).collect();
    assert_eq!(parsed.iter().map(|p| p.major).collect::<Vec<_>>(), [false, true, true, false, false]);
    assert_eq!((parsed[4].heap_before_mb, parsed[4].heap_after_mb, parsed[4].pause_ms), (31.7, 18.2, 1.00));
    assert_eq!(parsed[1].pause_ms, 9.7);
    assert_eq!((parsed[0].isolate.as_str(), parsed[4].isolate.as_str()), ("0x1", "0x2"));
    assert_eq!(parsed[1].marking, Some((9.2, 91)));
    assert_eq!(parsed[2].marking, Some((5.5, 150)));
    assert_eq!(parsed[0].marking, None);
    assert_eq!((parsed[2].heap_before_mb, parsed[2].heap_after_mb, parsed[2].pause_ms), (20.7, 13.9, 5.57));
    assert!(parse_trace_gc("hello").is_none());
}

#[test]
fn gc_matches_trace_gc_node_18() {
    compare_with_trace_gc(&build("18.20.8"), &[], &[]);
}

#[test]
fn gc_matches_trace_gc_node_20() {
    compare_with_trace_gc(&build("20.20.2"), &[], &[]);
}

#[test]
fn gc_matches_trace_gc_node_22() {
    compare_with_trace_gc(&build("22.23.3"), &[], &[]);
}

#[test]
fn gc_matches_trace_gc_node_24() {
    compare_with_trace_gc(&build("24.21.0"), &[], &[]);
}

#[test]
fn gc_matches_trace_gc_node_26() {
    compare_with_trace_gc(&build("26.10.0"), &[], &[]);
}

#[test]
fn gc_matches_trace_gc_debian_node_18_with_v8_in_libnode() {
    compare_with_trace_gc(&build("debian-18"), &[], &[]);
}

#[test]
fn forced_gcs_are_counted() {
    // gc() from --expose-gc: reason "testing", counted like any other.
    compare_with_trace_gc(&build("22.23.3"), &["--expose-gc"], &["--force-gc"]);
}

#[test]
fn worker_threads_gc_on_their_own_threads() {
    // Three workers, each an isolate collecting on its own thread.
    let threads = compare_with_trace_gc(&build("22.23.3"), &[], &["--workers", "3"]);
    assert!(threads >= 3, "GCs on {threads} threads");
}

/// The first byte of `GCTracer::StartObservablePause` in the running
/// process: an attached uprobe has replaced it with int3 (0xcc), and a
/// detached one has put the original back. Also returns the file's byte.
fn pause_probe_byte(pid: u32, binary: &std::path::Path) -> (u8, u8) {
    use std::{io::Read, os::unix::fs::FileExt};
    let mut data = Vec::new();
    std::fs::File::open(binary).unwrap().read_to_end(&mut data).unwrap();
    let binary = heaptrace::v8::binary::resolve(&data).unwrap();
    let offset = binary.offsets(heaptrace::v8::probes::V8Function::StartObservablePause)[0];
    let maps = procfs::process::Process::new(pid as i32).unwrap().maps().unwrap();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let m = maps
        .iter()
        .find(|m| {
            matches!(&m.pathname, procfs::process::MMapPath::Path(p) if *p == exe)
                && m.offset <= offset
                && offset < m.offset + (m.address.1 - m.address.0)
        })
        .expect("the text mapping");
    let vaddr = m.address.0 + (offset - m.offset);
    let mut byte = [0u8];
    std::fs::File::open(format!("/proc/{pid}/mem")).unwrap().read_exact_at(&mut byte, vaddr).unwrap();
    (byte[0], data[offset as usize])
}

#[test]
fn attach_in_the_middle_of_heavy_gc_and_detach_cleanly() {
    require_root();
    let b = build("24.21.0");
    let script = repo_root().join("workloads/gc-heavy.js");
    let mut node = b
        .command(&[script.as_os_str(), "8".as_ref()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node");
    let out = lines(node.stdout.take().unwrap());
    while out.recv_timeout(WAIT).expect("READY") != "READY" {}
    use std::io::Write;
    writeln!(node.stdin.as_mut().unwrap(), "go").unwrap();
    thread::sleep(std::time::Duration::from_millis(800));

    // Attach while it collects several times a second; leave after 1.5 s.
    let pid = node.id();
    let (original, in_file) = pause_probe_byte(pid, &b.node);
    assert_eq!(original, in_file);
    let h = Heaptrace::attach(&[pid], &["--duration", "1500ms"]);
    assert_eq!(pause_probe_byte(pid, &b.node).0, 0xcc, "the uprobe's int3 is in place while attached");
    // heaptrace's own programs (by the fds it holds, not by name: other BPF
    // users of the host do not count): every V8 probe program of the table.
    let ours = bpf_programs_of(h.pid());
    let gc = ours.iter().filter(|(_, name)| name.starts_with("gc_")).count();
    assert_eq!(gc, heaptrace::v8::probes::programs().len(), "{ours:?}");
    let (status, records) = h.finish();
    assert!(status.success());
    let gcs: Vec<&Value> = records.iter().filter(|r| r["type"] == "gc").collect();
    assert!(gcs.len() > 10, "{} GCs seen in 1.5 s", gcs.len());
    assert!(gcs.iter().all(|g| g["pause_ns"].as_u64().unwrap() > 0 && g["reason"] != "unknown"));

    // Nothing stays attached, and node finishes its run unharmed.
    assert_eq!(pause_probe_byte(pid, &b.node).0, original, "the original instruction is back");
    assert_eq!(still_loaded_after_release(&ours), vec![], "programs left behind after heaptrace exited");
    let mut done = false;
    while let Ok(line) = out.recv_timeout(WAIT) {
        done |= line == "DONE";
    }
    let status = node.wait().unwrap();
    assert!(done && status.success(), "node after detach: {status}");
}

#[test]
fn a_stripped_node_is_named_with_its_build_id_and_traced_for_memory_only() {
    require_root();
    // strip removes the V8 symbols of official Node 24 (none are in .dynsym).
    let stripped = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("node-24-stripped");
    std::fs::copy(build("24.21.0").node, &stripped).unwrap();
    let strip = Command::new("strip").arg(&stripped).status().expect("strip (binutils)");
    assert!(strip.success());
    let mut node =
        Command::new(&stripped).args(["-e", "setInterval(() => Buffer.alloc(1 << 20), 50)"]).spawn().unwrap();
    // Once it runs the stripped binary (not yet the test's own, forked).
    let exe = format!("/proc/{}/exe", node.id());
    poll("node exec'd", WAIT, || (std::fs::read_link(&exe).ok()? == stripped).then_some(()));
    let out = Command::new(heaptrace_bin())
        .args(["--pid", &node.id().to_string(), "--duration", "1s", "--interval", "200ms", "-o", "json"])
        .output()
        .unwrap();
    let _ = node.kill();
    let _ = node.wait();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no V8 garbage-collector symbols")
            && stderr.contains("bd05d6407047594fc3d31dd4ed4a37fe48c01f93")
            && stderr.contains("stripped"),
        "stderr: {stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().any(|l| l.contains("\"type\":\"snapshot\"")), "memory tracing goes on");
}

#[test]
fn a_process_without_v8_is_traced_for_memory_only() {
    require_root();
    let w = Workload::memwork();
    let out = Command::new(heaptrace_bin())
        .args(["--pid", &w.pid().to_string(), "--duration", "1s", "--interval", "200ms", "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no V8 garbage-collector symbols") && stderr.contains("tracing memory only"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().any(|l| l.contains("\"type\":\"snapshot\"")));
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(summary["processes"][0]["gc"].is_null());
}
