//! Privileged tests of `heaptrace agent` against a real Prometheus (Debian's
//! `prometheus`, run on loopback): GC counts per container equal
//! `--trace-gc`, memory series move, a real OOM kill is counted, the
//! dashboard's queries return data, `promtool check metrics` passes, churn
//! leaves bounded memory and no stale series, and SIGTERM detaches
//! everything. Run as root; they never skip.

mod support;

use std::{
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::*;

/// A port for this test run (tests run one at a time).
fn port(base: u16) -> u16 {
    base + (std::process::id() % 5000) as u16
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl").args(["-s", "-m", "5"]).args(args).output().expect("curl");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

struct Agent {
    child: Child,
    url: String,
}

impl Agent {
    fn start(args: &[&str]) -> Self {
        let listen = format!("127.0.0.1:{}", port(20000));
        let child = Command::new(heaptrace_bin())
            .args(["agent", "--listen", &listen])
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawning heaptrace agent");
        let a = Self { child, url: format!("http://{listen}") };
        let deadline = Instant::now() + WAIT;
        // Healthy once the programs are attached and running processes
        // traced: what follows is seen from its start.
        while curl(&[&format!("{}/healthz", a.url)]).1 != "ok\n" {
            assert!(Instant::now() < deadline, "the agent did not become healthy");
            sleep(Duration::from_millis(100));
        }
        a
    }

    fn metrics(&self) -> String {
        curl(&[&format!("{}/metrics", self.url)]).1
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM; returns how long it took to exit, and whether it exited 0.
    fn terminate(mut self) -> (Duration, bool) {
        let t = Instant::now();
        // SAFETY: kill() on our own child's pid with a valid signal number.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        (t.elapsed(), status.success())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Prometheus {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Prometheus {
    fn start(target: &str) -> Self {
        let dir =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: heaptrace\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let listen = format!("127.0.0.1:{}", port(30000));
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (scripts/setup.sh installs Debian's package)");
        let p = Self { child, url: format!("http://{listen}"), dir };
        let deadline = Instant::now() + WAIT;
        while !curl(&[&format!("{}/-/ready", p.url)]).0 {
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            sleep(Duration::from_millis(100));
        }
        p
    }

    /// An instant query's result vector.
    fn query(&self, q: &str) -> Vec<Value> {
        let (ok, body) =
            curl(&["-G", "--data-urlencode", &format!("query={q}"), &format!("{}/api/v1/query", self.url)]);
        assert!(ok, "query {q} failed");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{q}: {e}: {body}"));
        assert_eq!(v["status"], "success", "{q}: {body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The value of a query with one result per `by` label value.
    fn values_by(&self, q: &str, label: &str) -> Vec<(String, f64)> {
        self.query(q)
            .iter()
            .map(|r| {
                let key = r["metric"][label].as_str().unwrap_or("").to_owned();
                (key, r["value"][1].as_str().unwrap().parse().unwrap())
            })
            .collect()
    }

    /// Polls until `pred` holds for the query's values, or fails saying what
    /// it saw last.
    fn wait_for(&self, q: &str, label: &str, pred: impl Fn(&[(String, f64)]) -> bool) -> Vec<(String, f64)> {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let v = self.values_by(q, label);
            if pred(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{q}: still {v:?}");
            sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// v2 cgroups named like a pod's containers, with, for the memory limit on
/// this hybrid host, a v1 memory cgroup of the same path; all under one
/// top cgroup of this test's, which the agent selects. Removed by a guard.
struct PodCgroups {
    v2: PathBuf,
    v1_memory: Option<PathBuf>,
    top: String,
    guard: CgroupGuard,
}

impl PodCgroups {
    fn new() -> Self {
        let v2 = cgroup_v2_root();
        let v1 = PathBuf::from("/sys/fs/cgroup/memory");
        let v1_memory = v1.join("memory.limit_in_bytes").exists().then_some(v1);
        let top = format!("heaptrace-agent-test-{}", std::process::id());
        let mut guard = CgroupGuard::new();
        guard.make(&v2.join(&top));
        Self { v2, v1_memory, top, guard }
    }

    /// `<top>/kubepods/burstable/pod<uid>/<id>`; with a limit, in v1 too
    /// (or v2's memory.max where the controller is enabled).
    fn container(&mut self, uid: &str, id: &str, limit: Option<u64>) -> Vec<PathBuf> {
        let rel = format!("{}/kubepods/burstable/pod{uid}/{id}", self.top);
        let mut dirs = vec![self.guard.make(&self.v2.join(&rel))];
        if let Some(limit) = limit {
            if let Some(v1) = &self.v1_memory {
                let d = self.guard.make(&v1.join(&rel));
                std::fs::write(d.join("memory.limit_in_bytes"), limit.to_string()).unwrap();
                let _ = std::fs::write(d.join("memory.memsw.limit_in_bytes"), limit.to_string());
                dirs.push(d);
            } else {
                std::fs::write(dirs[0].join("memory.max"), limit.to_string()).expect("memory.max");
            }
        }
        dirs
    }
}

/// node --trace-gc SCRIPT ARGS in the given cgroups, joined between fork
/// and exec as a runtime does.
fn node_in(cgroups: Vec<PathBuf>, args: &[&str], trace_gc: bool) -> Child {
    let mut cmd = Command::new(node_bin("22.23.3"));
    if trace_gc {
        cmd.arg("--trace-gc").stdin(Stdio::piped()).stdout(Stdio::piped());
    } else {
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
    }
    cmd.args(args);
    // SAFETY: the closure only writes the child's pid to cgroup files
    // (open, write, close), which is safe between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for d in &cgroups {
                std::fs::write(d.join("cgroup.procs"), std::process::id().to_string())?;
            }
            Ok(())
        });
    }
    cmd.spawn().expect("node")
}

fn script(name: &str) -> String {
    repo_root().join("workloads").join(name).display().to_string()
}

#[test]
fn prometheus_sees_gc_and_memory_per_container_and_the_dashboard_works() {
    require_root();
    let mut pods = PodCgroups::new();
    let (uid_a, id_a) = ("0f4a8c2e-1b3d-4e5f-8a9b-0c1d2e3f4a5b", "a1".repeat(32));
    let (uid_b, id_b, id_leak) = ("1f4a8c2e-1b3d-4e5f-8a9b-0c1d2e3f4a5b", "b2".repeat(32), "c3".repeat(32));
    // Node processes in this test's cgroups only, not every node on the host.
    let selected = format!("/{}", pods.top);
    let agent = Agent::start(&["--interval", "1s", "--cgroup", &selected]);
    let ours = bpf_programs_of(agent.pid());
    assert!(ours.len() >= 4, "the agent's programs: {ours:?}");
    let prom = Prometheus::start(agent.url.trim_start_matches("http://"));

    // Two GC workloads in two pods, and a leak with a 96 MiB limit in a
    // second container of pod B, which the kernel OOM-kills.
    let limit: u64 = 96 << 20;
    let mut gc_a = node_in(pods.container(uid_a, &id_a, None), &[&script("gc-heavy.js"), "2"], true);
    let mut gc_b = node_in(pods.container(uid_b, &id_b, None), &[&script("gc-heavy.js"), "2"], true);
    let mut leak =
        node_in(pods.container(uid_b, &id_leak, Some(limit)), &[&script("leak.js"), "60", "25"], false);
    // A service that keeps running (and slowly leaking) under a generous
    // limit, so the dashboard has live gauges to show.
    let id_steady = "d4".repeat(32);
    let mut steady = node_in(
        pods.container("2f4a8c2e-1b3d-4e5f-8a9b-0c1d2e3f4a5b", &id_steady, Some(512 << 20)),
        &[&script("leak.js"), "120", "10"],
        false,
    );
    let mut counts = Vec::new();
    for (child, id) in [(&mut gc_a, &id_a), (&mut gc_b, &id_b)] {
        use std::io::{BufRead, Write};
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "READY");
        writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
        assert!(child.wait().unwrap().success());
        counts.push((id.clone(), trace_gc_count(&out)));
    }
    let leak_status = leak.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(leak_status.signal(), Some(libc::SIGKILL), "the leak should be OOM-killed: {leak_status:?}");

    // GC counts per container, through Prometheus, equal --trace-gc.
    let q = r#"sum by (container_id) (heaptrace_nodejs_gc_duration_seconds_count{kind=~"minor|major"})"#;
    let want = counts.clone();
    eprintln!(
        "{}",
        agent
            .metrics()
            .lines()
            .filter(|l| l.contains("gc_duration_seconds_count") || l.contains("dropped"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let got = prom.wait_for(q, "container_id", |v| {
        want.iter().all(|(id, n)| v.iter().any(|(k, x)| k == id && *x == *n as f64))
    });
    eprintln!("GC counts per container: {got:?} (--trace-gc: {counts:?})");
    // The pod UID label joins with kube_pod_info.
    let by_pod = prom.values_by(
        r#"sum by (pod_uid) (heaptrace_nodejs_gc_duration_seconds_count{kind=~"minor|major"})"#,
        "pod_uid",
    );
    assert!(by_pod.iter().any(|(uid, n)| uid == uid_a && *n == counts[0].1 as f64), "{by_pod:?}");

    // Memory series moved: the leak's anonymous RSS grew by more than 10 MiB
    // between the agent's samples (it is killed at 96 MiB).
    let grew = prom.values_by(
        &format!(
            r#"max_over_time(heaptrace_process_resident_memory_bytes{{type="anon",container_id="{id_leak}"}}[5m]) - min_over_time(heaptrace_process_resident_memory_bytes{{type="anon",container_id="{id_leak}"}}[5m])"#
        ),
        "container_id",
    );
    assert!(grew.first().is_some_and(|(_, v)| *v > (10 << 20) as f64), "leak growth: {grew:?}");
    // Its cgroup's limit, and the OOM kill.
    let limit_seen = prom.values_by(
        &format!(r#"max_over_time(heaptrace_container_memory_limit_bytes{{container_id="{id_leak}"}}[5m])"#),
        "container_id",
    );
    assert_eq!(limit_seen.first().map(|(_, v)| *v), Some(limit as f64));
    prom.wait_for(
        &format!(r#"heaptrace_oom_kills_total{{container_id="{id_leak}",source="kernel"}}"#),
        "container_id",
        |v| v.first().is_some_and(|(_, n)| *n == 1.0),
    );

    // Every query of the Grafana dashboard returns data. The forecast
    // exists only while a verdict finds memory growing or leaking (the
    // steady service's, once judged, has its cgroup's and V8's limits):
    // without such a verdict its panel may be empty, but its query must run.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/grafana/heaptrace.json")).unwrap(),
    )
    .unwrap();
    let growing = !prom.query(r#"heaptrace_memory_verdict{state=~"growing|leak"} == 1"#).is_empty();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let q =
                expr.replace("$namespace", ".*").replace("$__rate_interval", "1m").replace("$__range", "5m");
            let result = prom.query(&q);
            let forecast = expr.contains("heaptrace_time_to_limit_seconds");
            assert!(
                !result.is_empty() || (forecast && !growing),
                "panel {:?}: no data for {q}",
                panel["title"]
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 16);

    // The exposition passes promtool's lint; the JSON endpoint answers.
    let metrics = agent.metrics();
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(promtool.stdin.as_mut().unwrap(), metrics.as_bytes()).unwrap();
    let lint = promtool.wait_with_output().unwrap();
    assert!(lint.status.success(), "promtool: {}", String::from_utf8_lossy(&lint.stderr));
    let findings: Value = serde_json::from_str(&curl(&[&format!("{}/findings", agent.url)]).1).unwrap();
    assert!(findings["groups"].is_array() && findings["node"].is_string());

    let _ = steady.kill();
    let _ = steady.wait();

    // SIGTERM: out within seconds, nothing left attached.
    drop(prom);
    // Its GC programs, attached since, count too.
    let ours: Vec<(u64, String)> = bpf_programs_of(agent.pid());
    assert!(ours.iter().any(|(_, name)| name.starts_with("gc_")), "{ours:?}");
    let (took, ok) = agent.terminate();
    assert!(ok, "the agent exits 0 on SIGTERM");
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    assert_eq!(still_loaded_after_release(&ours), vec![], "programs left loaded after SIGTERM");
}

#[test]
fn churn_keeps_memory_bounded_and_stale_series_go() {
    require_root();
    let mut w = Workload::spawn(&workload_bin("churn"), &[]);
    let agent =
        Agent::start(&["--comm", "churn", "--per-process", "--series-grace", "2s", "--interval", "200ms"]);
    let rss_kib = |pid: u32| proc_status_bytes(pid, "VmRSS") / 1024;
    let before = rss_kib(agent.pid());
    for _ in 0..5 {
        w.send("go 100");
        w.expect_line("done");
    }
    let parent = format!("pid=\"{}\"", w.pid());
    // Gauges describe the present: an exited child's go at the next interval.
    let child_gauges = |metrics: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with("heaptrace_process_resident_memory_bytes") && !l.contains(&parent))
            .count()
    };
    poll("gauges of exited children gone", WAIT, || (child_gauges(&agent.metrics()) == 0).then_some(()));
    let busy = rss_kib(agent.pid());
    let hwm = proc_status_bytes(agent.pid(), "VmHWM") / 1024;
    // Counters and histograms stay for the 2 s grace, then go: every child
    // series (large allocations, none here, aside) within a few intervals
    // more.
    let stale = |metrics: &str| -> Vec<String> {
        metrics
            .lines()
            .filter(|l| l.contains("pid=\"") && !l.contains(&parent) && !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    let metrics = poll("series of exited processes gone after the 2 s grace", Duration::from_secs(5), || {
        let m = agent.metrics();
        stale(&m).is_empty().then_some(m)
    });
    assert!(metrics.contains(&parent), "the parent's series are there");
    eprintln!("agent RSS: {before} KiB before, {busy} KiB after 500 processes, peak {hwm} KiB");
    // The stated bound (docs/metrics.md): 48 MiB.
    assert!(hwm < 48 * 1024, "agent peak RSS {hwm} KiB");
    drop(w);
    let (took, ok) = agent.terminate();
    assert!(ok && took < Duration::from_secs(5));
}
