//! Deaths explained, for real: V8 running out of heap in an Express-like
//! server driven by `ab`, and the kernel's OOM killer ending node in a
//! podman container with a memory limit.

mod support;

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use support::*;

/// The GCs of V8's "Last few GCs": collector, heap before and after in MB
/// as printed (one decimal). V8 keeps them in a ring buffer of truncated
/// entries, so one printed line can hold several: entries are split at
/// their "[pid:0x...]   N ms: " prefix, not at line ends.
fn last_few_gcs(stderr: &[String], pid: u32) -> Vec<(String, String, String)> {
    let start = stderr.iter().position(|l| l.contains("<--- Last few GCs --->")).expect("V8's Last few GCs");
    let text: String = stderr[start + 1..]
        .iter()
        .take_while(|l| !l.contains("<--- JS stacktrace --->"))
        .map(String::as_str)
        .collect();
    let prefix = format!("[{pid}:0x");
    // What precedes the first prefix is the tail of an entry the ring
    // buffer overwrote.
    text.split(prefix.as_str())
        .skip(1)
        .filter_map(|entry| {
            // "3eecf000]     2275 ms: Mark-Compact 92.2 (124.5) -> 91.8 (125.0) MB, ..."
            let rest = entry.split_once(" ms: ")?.1;
            let (name, sizes) = rest.split_at(rest.find(|c: char| c.is_ascii_digit())?);
            let words: Vec<&str> = sizes.split_whitespace().collect();
            let arrow = words.iter().position(|w| *w == "->")?;
            Some((name.trim().to_owned(), words[0].to_owned(), words.get(arrow + 1)?.to_string()))
        })
        .collect()
}

fn mb(bytes: &Value) -> String {
    format!("{:.1}", bytes.as_f64().unwrap() / 1048576.0)
}

#[test]
fn v8_out_of_memory_under_ab_is_explained_with_its_last_gcs() {
    require_root();
    let (node, _comm) = unique_node("22.23.3", "oom");
    let script = repo_root().join("workloads/diagnosis/express-leak.js");
    let mut child = Command::new(&node)
        .args(["--max-old-space-size=96"])
        .arg(&script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = line_channel(child.stdout.take().unwrap());
    let err = line_channel(child.stderr.take().unwrap());
    let server = ChildGuard(child);
    let pid = server.0.id();
    let port: u16 = expect_line_on(&out, "listening").split_whitespace().nth(1).unwrap().parse().unwrap();
    expect_line_on(&out, "ready");

    let dumps = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("dumps-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dumps);
    let mut h = Heaptrace::attach(&[pid], &["--dump-dir", dumps.to_str().unwrap()]);
    // The limits are read at the main isolate's first GC. The old
    // generation's is what --max-old-space-size set; heap_size_limit adds
    // the young generation's reserve.
    let snapshot = h.next_matching("a snapshot with V8's heap limit", |v| {
        v["type"] == "snapshot" && v["pid"] == pid && !v["v8_heap_limit_bytes"].is_null()
    });
    let limit = snapshot["v8_heap_limit_bytes"].as_u64().unwrap();
    let old_generation =
        snapshot["v8_old_generation_limit_bytes"].as_u64().expect("the old generation's limit");
    assert_eq!(old_generation, 96 << 20, "--max-old-space-size=96");
    assert!(limit > old_generation);

    let _ab = ChildGuard(
        Command::new("ab")
            .args(["-c", "100", "-n", "1000", "-k", "-q", "-r"])
            .arg(format!("http://127.0.0.1:{port}/"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ab (apache2-utils; scripts/setup.sh installs it)"),
    );
    let death = h.next_matching_within("the death record", Duration::from_secs(90), |v| {
        v["type"] == "death" && v["pid"] == pid
    });
    let (status, records) = h.finish();
    assert!(status.success());
    let stderr: Vec<String> = err.try_iter().collect();

    assert_eq!(death["cause"], "v8-oom", "{death}");
    assert_eq!(death["signal"], "SIGABRT");
    let memory = &death["memory"];
    assert_eq!(memory["source"], "kernel", "memory read in the kernel at the abort: {death}");
    let used = memory["js_heap_used_bytes"].as_f64().unwrap();
    assert_eq!(memory["v8_heap_limit_bytes"].as_u64(), Some(limit));
    assert_eq!(memory["v8_old_generation_limit_bytes"].as_u64(), Some(old_generation));
    assert!(
        (used - old_generation as f64).abs() <= 0.05 * old_generation as f64,
        "JS heap at death {used} within 5 % of the old generation's limit {old_generation}"
    );
    assert!(int(memory, "rss_anon_bytes") as f64 >= used, "anon RSS holds the JS heap: {memory}");
    // The oom record carries the same kernel figures (it once copied the
    // last interval's sample).
    let oom = of_type(&records, "oom").into_iter().find(|o| o["pid"] == pid).expect("an oom record");
    assert_eq!(oom["source"], "v8");
    assert_eq!(oom["anon_rss_bytes"], memory["rss_anon_bytes"]);
    // The dump: where the record says, root-only, and its last GCs are
    // the ones V8 printed as it died.
    let path = Path::new(death["dump_path"].as_str().expect("dump_path"));
    assert!(path.starts_with(&dumps), "{}", path.display());
    assert_eq!(std::fs::metadata(path).unwrap().permissions().mode() & 0o777, 0o600);
    let dump: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(dump["cause"], "v8-oom");
    let ours: Vec<(String, String, String)> = dump["flight_recorder"]["gcs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["tid"] == pid)
        .map(|g| {
            (
                g["collector"].as_str().unwrap().to_owned(),
                mb(&g["heap_before_bytes"]),
                mb(&g["heap_after_bytes"]),
            )
        })
        .collect();
    let v8 = last_few_gcs(&stderr, pid);
    assert!(!v8.is_empty(), "V8 printed its last GCs: {stderr:?}");
    assert!(ours.len() >= v8.len(), "ours {ours:?}, V8's {v8:?}");
    let tail = &ours[ours.len() - v8.len()..];
    for (i, ((name, before, after), (our_name, our_before, our_after))) in v8.iter().zip(tail).enumerate() {
        assert!(name.starts_with(our_name.as_str()), "GC {i}: V8 {name}, ours {our_name}");
        assert_eq!((before, after), (our_before, our_after), "GC {i}: V8's {v8:?}, ours {tail:?}");
    }
    assert!(!dump["flight_recorder"]["memory"].as_array().unwrap().is_empty());
    // It names the code that filled the heap: the handler that keeps an
    // array per request is its top allocation site.
    let top = &dump["allocation_sites"][0];
    let handler =
        top["frames"].as_array().unwrap().iter().find(|f| f["kind"] == "js" && f["function"] == "handler");
    assert!(handler.is_some(), "the top site at death is not the handler: {top}");
    let _ = std::fs::remove_dir_all(&dumps);
}

/// `podman rm -f` when the test ends.
struct PodmanGuard(String, Child);

impl Drop for PodmanGuard {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rm", "-f", "-t", "0", &self.0]).output();
        let _ = self.1.kill();
        let _ = self.1.wait();
    }
}

const LIMIT: u64 = 160 << 20;

#[test]
fn a_container_oom_kill_is_forecast_and_explained() {
    require_root();
    let rootfs = container_rootfs();
    let cidfile = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cid-oom-{}", std::process::id()));
    let _ = std::fs::remove_file(&cidfile);
    // A native leak of ~58 MiB/min (Buffers), so the cgroup's limit, not
    // V8's, is what it runs into.
    let mut child = Command::new("podman")
        .args(["--runtime", "/usr/sbin/runc", "--cgroup-manager", "cgroupfs", "run", "--rm"])
        .args(["--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"])
        .args(["--memory", "160m", "--memory-swap", "160m", "--env", "BIG_COUNT=15", "--cidfile"])
        .arg(&cidfile)
        .arg("--rootfs")
        .arg(&rootfs)
        .args(["/usr/bin/node", "/app/buffer-leak.js"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("podman (scripts/setup.sh installs it)");
    let out = line_channel(child.stdout.take().unwrap());
    expect_line_on(&out, "ready");
    let id = std::fs::read_to_string(&cidfile).expect("podman's cidfile").trim().to_owned();
    let _ = std::fs::remove_file(&cidfile);
    let _container = PodmanGuard(id.clone(), child);

    let mut h = Heaptrace::start(&["--container", &id[..12], "--interval", "1s"]);
    let death = h.next_matching_within("the container's death", Duration::from_secs(240), |v| {
        v["type"] == "death" && v["container_id"] == id
    });
    let (status, records) = h.stop();
    assert!(status.success());

    assert_eq!(death["cause"], "oom-kill", "{death}");
    assert_eq!(death["signal"], "SIGKILL");
    assert_eq!(death["memory"]["source"], "kernel");
    assert_eq!(death["memory"]["cgroup_limit_bytes"].as_u64(), Some(LIMIT));
    assert_eq!(death["runtime"], "podman");
    let pid = death["pid"].as_u64().unwrap();
    let exit = of_type(&records, "exit").into_iter().find(|e| e["pid"] == pid).expect("its exit");
    assert_eq!(exit["oom_killed"], true);
    // Before it died, the verdict forecast the cgroup's limit: the
    // process's and its group's.
    let forecasts: Vec<&Value> = of_type(&records, "verdict")
        .into_iter()
        .filter(|v| v["cgroup_id"] == death["cgroup_id"] && v["verdict"]["limit"] == "cgroup")
        .collect();
    assert!(
        !forecasts.is_empty(),
        "no cgroup forecast before the OOM kill: {:?}",
        of_type(&records, "verdict")
    );
    let first = forecasts[0];
    assert_eq!(first["verdict"]["limit_bytes"].as_u64(), Some(LIMIT));
    assert_eq!(first["verdict"]["memory"], "native", "{first}");
    assert!(first["ts"].as_f64() < death["ts"].as_f64());
}
