//! What `heaptrace heap` costs the process it looks into: the pause of a
//! heap snapshot, against heap size (10, 100 and 500 MB of small live
//! objects, workloads/heap/sized-heap.js), paired with the peer a developer
//! would otherwise use: node's own `--heapsnapshot-signal` (a restart with
//! that flag, then a signal), which writes the snapshot to a file from
//! inside the process. Both are measured the same way, from inside: the
//! longest event-loop stall a 1 ms timer saw (`GET /lag`). Rounds alternate
//! the two on the same process.
//!
//! Also: the snapshot's size, heaptrace's wall time, CPU and peak RSS for
//! the whole command (analysis included), and the extra peak memory the
//! first snapshot needed inside node.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use crate::bench::{
    build_heaptrace, host_model, kernel_release, median, peak_rss, repo_root, status_bytes, write_report,
};

const SIZES_MB: [u64; 3] = [10, 100, 500];

/// A sized-heap.js server in a network namespace of its own.
struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Server {
    fn start(node: &Path, heap_mb: u64, dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let script = repo_root().join("workloads/heap/sized-heap.js");
        let mut child = Command::new("unshare")
            .args(["-n", "sh", "-c", "ip link set lo up && exec \"$@\"", "sh"])
            .arg(node)
            .args(["--max-old-space-size=4096", "--heapsnapshot-signal=SIGUSR2"])
            .arg(&script)
            .env("HEAP_MB", heap_mb.to_string())
            .env("PORT", "0")
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting sized-heap.js")?;
        let out = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("listening ") {
                    let _ = tx.send(port.trim().parse::<u16>());
                }
            }
        });
        let port = rx.recv_timeout(Duration::from_secs(300)).context("sized-heap.js did not start")??;
        Ok(Self { child, port, dir: dir.to_path_buf() })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn get(&self, path: &str) -> Result<String> {
        let out = Command::new("nsenter")
            .args(["-t", &self.pid().to_string(), "-n", "curl", "-sS", "-m", "120"])
            .arg(format!("http://127.0.0.1:{}{path}", self.port))
            .output()?;
        ensure!(out.status.success(), "GET {path}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The longest event-loop stall since the last call, ms.
    fn lag_ms(&self) -> Result<f64> {
        Ok(self.get("/lag")?.parse()?)
    }

    fn rss(&self) -> Result<u64> {
        status_bytes(self.pid(), "VmRSS")
    }

    /// node's own snapshot: SIGUSR2, then wait for the file to be complete
    /// (the next request is answered only after the write returns).
    fn node_snapshot(&self) -> Result<f64> {
        self.lag_ms()?;
        // SAFETY: kill() on our own child's pid with a valid signal number.
        unsafe { libc::kill(self.pid() as i32, libc::SIGUSR2) };
        let deadline = Instant::now() + Duration::from_secs(300);
        while snapshot_files(&self.dir)?.is_empty() {
            ensure!(Instant::now() < deadline, "node wrote no snapshot");
            thread::sleep(Duration::from_millis(5));
        }
        let lag = self.lag_ms()?;
        for f in snapshot_files(&self.dir)? {
            fs::remove_file(f)?;
        }
        Ok(lag)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn snapshot_files(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "heapsnapshot"))
        .collect())
}

/// One `heaptrace heap` run.
struct Run {
    /// The longest stall the process saw.
    lag_ms: f64,
    heap_used: u64,
    snapshot_bytes: u64,
    /// heaptrace's own figures for the whole command.
    wall_s: f64,
    cpu_s: f64,
    peak_rss: u64,
}

fn heaptrace_snapshot(heaptrace: &Path, server: &Server) -> Result<Run> {
    server.lag_ms()?;
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "TIME %U %S %M"])
        .arg(heaptrace)
        .args(["heap", &server.pid().to_string(), "-o", "json"])
        .output()
        .context("running heaptrace heap under /usr/bin/time")?;
    let wall_s = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "heaptrace heap failed: {stderr}");
    let lag_ms = server.lag_ms()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let time = stderr.lines().find_map(|l| l.strip_prefix("TIME ")).context("no /usr/bin/time line")?;
    let t: Vec<f64> = time.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    ensure!(t.len() == 3, "odd /usr/bin/time line {time:?}");
    Ok(Run {
        lag_ms,
        heap_used: v["cost"]["heap_used_bytes"].as_u64().unwrap_or(0),
        snapshot_bytes: v["cost"]["snapshot_bytes"][0].as_u64().unwrap_or(0),
        wall_s,
        cpu_s: t[0] + t[1],
        peak_rss: (t[2] * 1024.0) as u64,
    })
}

struct SizeResult {
    heap_mb: u64,
    runs: Vec<Run>,
    node_lags: Vec<f64>,
    /// Extra peak RSS of node at its first snapshot (heaptrace's).
    node_extra_peak: u64,
}

pub fn heap_snapshot_cost(rounds: usize, node: &Path, out: &Path) -> Result<()> {
    ensure!(rounds > 0, "--rounds must be at least 1");
    let root = repo_root();
    let heaptrace = build_heaptrace(&root)?;
    let mut results = Vec::new();
    for heap_mb in SIZES_MB {
        let dir = root.join(format!("target/bench-heap-{heap_mb}"));
        let server = Server::start(node, heap_mb, &dir)?;
        let rss_before = server.rss()?;
        let mut runs = Vec::new();
        let mut node_lags = Vec::new();
        let mut node_extra_peak = 0;
        for round in 0..rounds {
            eprintln!("bench-heap: {heap_mb} MB, round {}/{rounds}", round + 1);
            runs.push(heaptrace_snapshot(&heaptrace, &server)?);
            if round == 0 {
                node_extra_peak = peak_rss(server.pid())?.saturating_sub(rss_before);
            }
            node_lags.push(server.node_snapshot()?);
        }
        server.get("/").context("the server stopped answering")?;
        results.push(SizeResult { heap_mb, runs, node_lags, node_extra_peak });
    }
    write_report(&report(&results, rounds, node)?, out)
}

fn report(results: &[SizeResult], rounds: usize, node: &Path) -> Result<String> {
    let version = Command::new(node).arg("--version").output()?;
    let mut s = String::new();
    writeln!(s, "# What a heap snapshot costs the process (`heaptrace heap`)\n")?;
    writeln!(s, "Command: `sudo cargo xtask bench-heap --rounds {rounds}`  ")?;
    writeln!(
        s,
        "Node {} ({}), {}, kernel {}.  ",
        String::from_utf8_lossy(&version.stdout).trim(),
        node.display(),
        host_model(),
        kernel_release()
    )?;
    writeln!(
        s,
        "Workload: workloads/heap/sized-heap.js, a server holding HEAP_MB of ~200-byte records (an \
         object, a string and a 4-element array each). Pause: the longest event-loop stall a 1 ms \
         timer inside the process saw, around one `heaptrace heap PID` (one snapshot, default mode), \
         and around node's own `--heapsnapshot-signal` snapshot (the peer: it needs a restart with \
         the flag). The two alternate on the same process; medians of {rounds} rounds.\n"
    )?;
    writeln!(
        s,
        "| heap in use | snapshot | pause, heaptrace | pause, node's own | ratio | pause per MiB | \
         heaptrace wall | heaptrace CPU | heaptrace peak RSS | node's extra peak RSS |"
    )?;
    writeln!(s, "|---|---|---|---|---|---|---|---|---|---|")?;
    let mut worst_per_mib: f64 = 0.0;
    for r in results {
        if r.runs.is_empty() {
            bail!("no runs for {} MB", r.heap_mb);
        }
        let med = |f: &dyn Fn(&Run) -> f64| median(&r.runs.iter().map(f).collect::<Vec<_>>());
        let used = med(&|x| x.heap_used as f64);
        let pause = med(&|x| x.lag_ms);
        let peer = median(&r.node_lags);
        let per_mib = pause / (used / f64::from(1 << 20));
        worst_per_mib = worst_per_mib.max(per_mib);
        writeln!(
            s,
            "| {:.0} MiB | {:.0} MiB | {:.0} ms | {:.0} ms | {:.2}× | {:.2} ms | {:.1} s | {:.1} s | {:.0} MiB | {:.0} MiB |",
            used / f64::from(1 << 20),
            med(&|x| x.snapshot_bytes as f64) / f64::from(1 << 20),
            pause,
            peer,
            pause / peer,
            per_mib,
            med(&|x| x.wall_s),
            med(&|x| x.cpu_s),
            med(&|x| x.peak_rss as f64) / f64::from(1 << 20),
            r.node_extra_peak as f64 / f64::from(1 << 20),
        )?;
    }
    writeln!(
        s,
        "\nThe largest pause per MiB of JS heap in use: {worst_per_mib:.2} ms. `heaptrace heap` prints \
         its expected pause from `PAUSE_PER_MIB`, and the memory a snapshot needs from \
         `extra_memory`, in heaptrace/src/heap/safety.rs, whose unit test holds them above these \
         figures; it refuses heaps above `--max-heap` (256 MiB), or without that memory left, unless \
         `--force`."
    )?;
    Ok(s)
}
