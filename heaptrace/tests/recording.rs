//! Recordings of real traced processes (`--record`, `heaptrace report`):
//! a replay prints what the live run printed, even where the traced
//! process, its binaries and /proc are gone; a recording cut by SIGKILL or
//! at any byte replays up to its last complete chunk; `--record-max`
//! stops it with a warning; files that are no recording are refused.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use serde_json::Value;
use support::*;

/// A directory of the test's own, removed even when the test panics.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("rec-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// workloads/leak.js under `node`, once it has said it runs.
fn leak_js(node: &Path, script: &Path, seconds: &str) -> Killed {
    let mut child = Command::new(node)
        .args([script.to_str().unwrap(), seconds, "5"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning node");
    let lines = line_channel(child.stdout.take().unwrap());
    let child = Killed(child);
    expect_line_on(&lines, "leak.js pid");
    child
}

fn report(args: &[&str]) -> Output {
    Command::new(heaptrace_bin()).arg("report").args(args).output().expect("running heaptrace report")
}

fn json_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A death's dump path is the one thing a replay cannot reproduce.
fn without_dump_paths(mut records: Vec<Value>) -> Vec<Value> {
    for r in &mut records {
        if let Some(o) = r.as_object_mut() {
            o.remove("dump_path");
        }
    }
    records
}

#[test]
fn a_replay_prints_what_the_live_run_printed_without_the_traced_host() {
    require_root();
    let dir = TempDir::new("live");
    // Its own copies of node and the script, deleted before the replay.
    let node = dir.0.join(format!("nrec{}", std::process::id() % 100_000));
    std::fs::copy(node_bin("22.23.3"), &node).unwrap();
    let script = dir.0.join("leak.js");
    std::fs::copy(repo_root().join("workloads/leak.js"), &script).unwrap();
    let workload = leak_js(&node, &script, "120");
    let pid = workload.0.id().to_string();
    let rec = dir.0.join("run.htrec");
    let live_html = dir.0.join("live.html");
    let mut h = Heaptrace::start(&[
        "--pid",
        &pid,
        "--duration",
        "25s",
        "--record",
        rec.to_str().unwrap(),
        "--html",
        live_html.to_str().unwrap(),
    ]);
    h.next_matching_within("summary", Duration::from_secs(60), |v| v["type"] == "summary");
    let (status, live) = h.finish();
    assert!(status.success(), "heaptrace: {status}");
    drop(workload);
    std::fs::remove_file(&node).unwrap();
    std::fs::remove_file(&script).unwrap();

    // Another "machine": a pid namespace of its own with its own /proc, in
    // which the traced process never existed.
    let out = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            heaptrace_bin(),
            "report",
            rec.to_str().unwrap(),
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "report: {}", stderr(&out));
    assert_eq!(stderr(&out), "", "a complete recording replays without a word");
    let replayed = json_lines(&out.stdout);
    assert_eq!(replayed, without_dump_paths(live.clone()), "the replay differs from the live run");

    // What that equality covers: snapshots, GCs, verdicts and JS-named sites.
    let count = |t: &str| of_type(&replayed, t).len();
    assert!(count("snapshot") >= 20 && count("gc") > 0 && count("verdict") > 0, "{replayed:?}");
    let summary = process_summary(&replayed, pid.parse().unwrap());
    let sites = summary["allocation_sites"].as_array().expect("allocation sites");
    assert!(sites.iter().any(|s| s.to_string().contains("leak.js")), "no site named in leak.js: {sites:?}");

    // The HTML report, made from the replay, is the live run's.
    let replay_html = dir.0.join("replay.html");
    let out = report(&[rec.to_str().unwrap(), "--html", replay_html.to_str().unwrap()]);
    assert!(out.status.success() && out.stdout.is_empty(), "{}", stderr(&out));
    assert!(
        std::fs::read(&live_html).unwrap() == std::fs::read(&replay_html).unwrap(),
        "the replay's HTML report differs from the live run's"
    );

    // Text output: the live run's summary too.
    let text = report(&[rec.to_str().unwrap()]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("=== heaptrace summary") && text.contains(&pid), "{text}");
}

#[test]
fn a_recording_cut_by_sigkill_or_at_any_byte_replays_up_to_its_last_chunk() {
    require_root();
    let dir = TempDir::new("cut");
    let workload = leak_js(&node_bin("22.23.3"), &repo_root().join("workloads/leak.js"), "120");
    let pid = workload.0.id().to_string();
    let rec = dir.0.join("killed.htrec");
    let heaptrace = Killed(
        Command::new(heaptrace_bin())
            .args(["--pid", &pid, "--no-stacks", "-o", "json", "--record", rec.to_str().unwrap()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Ten snapshots in the file, then SIGKILL: no chance to finish it.
    poll("ten snapshots recorded", Duration::from_secs(60), || {
        let out = report(&[rec.to_str()?, "-o", "json"]);
        (of_type(&json_lines(&out.stdout), "snapshot").len() >= 10).then_some(())
    });
    drop(heaptrace);
    let out = report(&[rec.to_str().unwrap(), "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let warning = stderr(&out);
    assert!(warning.contains("without its summary") || warning.contains("cut short"), "{warning}");
    let full = json_lines(&out.stdout);
    assert_eq!(full.last().unwrap()["type"], "summary", "a summary made at the last time");

    // Cut at arbitrary bytes: each reads up to its last complete chunk.
    let bytes = std::fs::read(&rec).unwrap();
    let mut last_snapshots = 0;
    for share in [0.11, 0.23, 0.37, 0.5, 0.61, 0.74, 0.89, 0.97] {
        let at = (bytes.len() as f64 * share) as usize;
        let part = dir.0.join(format!("cut-{at}.htrec"));
        std::fs::write(&part, &bytes[..at]).unwrap();
        let out = report(&[part.to_str().unwrap(), "-o", "json"]);
        let err = stderr(&out);
        assert!(out.status.success(), "cut at {at}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(err.contains("cut short") || err.contains("without its summary"), "cut at {at}: {err}");
        let records = json_lines(&out.stdout);
        if records.is_empty() {
            // Cut inside the first chunk: nothing before the `start` record.
            assert_eq!(last_snapshots, 0, "cut at {at}: nothing, after a longer part had something");
            continue;
        }
        let snapshots = of_type(&records, "snapshot").len();
        assert!(snapshots >= last_snapshots, "cut at {at}: {snapshots} snapshots, fewer than before");
        last_snapshots = snapshots;
        // Everything before the summary is the uncut replay's beginning.
        let n = records.len() - 1;
        assert_eq!(records[..n], full[..n], "cut at {at}");
    }
    assert!(last_snapshots >= 8, "{last_snapshots}");
}

#[test]
fn record_max_stops_the_recording_with_a_warning_in_the_agent_too() {
    require_root();
    let dir = TempDir::new("max");
    let (node, comm) = unique_node("22.23.3", "rmax");
    let workload = leak_js(&node, &repo_root().join("workloads/leak.js"), "120");
    let rec = dir.0.join("agent.htrec");
    let listen = format!("127.0.0.1:{}", 26000 + std::process::id() % 3000);
    let mut agent = Killed(
        Command::new(heaptrace_bin())
            .args(["agent", "--listen", &listen, "--comm", &comm, "--interval", "100ms"])
            .args(["--record", rec.to_str().unwrap(), "--record-max", "64KiB"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let errors = line_channel(agent.0.stderr.take().unwrap());
    let line = expect_line_on(&errors, "heaptrace: warning: the recording");
    assert!(line.contains("--record-max (64.0 KiB)") && line.contains("tracing goes on"), "{line}");
    let size = std::fs::metadata(&rec).unwrap().len();
    assert!(size <= 64 << 10, "{size} bytes");
    let out = report(&[rec.to_str().unwrap(), "-o", "json"]);
    assert!(out.status.success() && stderr(&out).contains("without its summary"), "{}", stderr(&out));
    let records = json_lines(&out.stdout);
    assert!(
        of_type(&records, "snapshot").iter().any(|s| s["pid"] == workload.0.id()),
        "the agent's recording holds the workload's snapshots"
    );
    assert!(agent.0.try_wait().unwrap().is_none(), "the agent goes on tracing after the warning");
}

#[test]
fn files_that_are_no_recording_are_refused_clearly() {
    let dir = TempDir::new("bad");
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let mut future = b"heaptrace recording\n".to_vec();
    future.extend_from_slice(&99u32.to_le_bytes());
    let garbage: Vec<u8> = (0..65536u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let cases: [(PathBuf, &str); 6] = [
        (write("empty", b""), "empty"),
        (write("garbage", &garbage), "not a heaptrace recording"),
        (write("json", b"{\"type\":\"start\"}\n"), "not a heaptrace recording"),
        (write("future", &future), "format version 99 is newer"),
        (dir.0.clone(), "is a directory"),
        (dir.0.join("missing"), "No such file"),
    ];
    for (path, want) in cases {
        let out = report(&[path.to_str().unwrap()]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", path.display());
        assert!(
            err.starts_with("heaptrace report: error: ") && err.contains(want),
            "{}: {err}",
            path.display()
        );
        assert!(!err.contains("panicked") && out.stdout.is_empty(), "{err}");
    }
}
