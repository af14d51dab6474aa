//! `heaptrace agent` on an idle host and on a busy one (GC-heavy Node
//! workloads plus the mmap storm): CPU (% of one core) and RSS; and the time
//! to serve `/metrics` with about 1,000 series.

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};

use crate::bench::{
    build_c, build_heaptrace, cpu_seconds, host_model, kernel_release, median, quantile, repo_root,
    write_report,
};

const LISTEN: &str = "127.0.0.1:19465";

struct Agent(Child);

impl Agent {
    fn start(heaptrace: &Path, args: &[&str]) -> Result<Self> {
        let child = Command::new(heaptrace)
            .args(["agent", "--listen", LISTEN])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let agent = Self(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while get("/healthz").map(|b| b != "ok\n").unwrap_or(true) {
            ensure!(Instant::now() < deadline, "the agent did not become healthy");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(agent)
    }

    fn rss(&self) -> Result<u64> {
        self.status_kb("VmRSS:").map(|kb| kb * 1024)
    }

    fn peak_rss(&self) -> Result<u64> {
        self.status_kb("VmHWM:").map(|kb| kb * 1024)
    }

    fn status_kb(&self, field: &str) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no such field in /proc/PID/status")?;
        Ok(kb)
    }

    /// CPU share of one core over `f`.
    fn cpu_during(&self, f: impl FnOnce() -> Result<()>) -> Result<f64> {
        let c0 = cpu_seconds(self.0.id())?;
        let t0 = Instant::now();
        f()?;
        Ok((cpu_seconds(self.0.id())? - c0) / t0.elapsed().as_secs_f64())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: kill() on our own child's pid with a valid signal number.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// A plain HTTP/1.1 GET on the agent; the body.
fn get(path: &str) -> Result<String> {
    let mut s = TcpStream::connect(LISTEN)?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    Ok(resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

pub fn agent(seconds: u64, node: &Path, out: &Path) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    ensure!(unsafe { libc::geteuid() } == 0, "the benchmark loads eBPF programs: run it as root");
    let root = repo_root();
    let heaptrace = build_heaptrace(&root)?;
    let storm = build_c(&root, "storm")?;
    let window = Duration::from_secs(seconds);

    let idle = measure_idle(&heaptrace, window)?;
    let busy = measure_busy(&heaptrace, &storm, node, &root, window)?;
    let scrape = measure_scrape(&heaptrace)?;
    write_report(&report(seconds, &idle, &busy, &scrape), out)
}

/// The default agent on a host where nothing it traces runs.
struct Idle {
    /// Share of one core.
    cpu: f64,
    rss: u64,
}

/// The default agent while node processes and the mmap storm run.
struct Busy {
    /// Share of one core.
    cpu: f64,
    peak_rss: u64,
    /// heaptrace_events_total at the end of the window.
    events: f64,
}

/// `GET /metrics` on an agent exporting about 1,000 series.
struct Scrape {
    series: usize,
    /// Time to serve each request, ms.
    ms: Vec<f64>,
    rss: u64,
}

/// Idle: the default agent (node processes), nothing running.
fn measure_idle(heaptrace: &Path, window: Duration) -> Result<Idle> {
    let a = Agent::start(heaptrace, &[])?;
    let cpu = a.cpu_during(|| {
        std::thread::sleep(window);
        Ok(())
    })?;
    let rss = a.rss()?;
    drop(a);
    eprintln!("idle: {:.2} % of a core, RSS {} KiB", cpu * 100.0, rss / 1024);
    Ok(Idle { cpu, rss })
}

/// Busy: two GC-heavy node processes back to back, and the mmap storm.
fn measure_busy(heaptrace: &Path, storm: &Path, node: &Path, root: &Path, window: Duration) -> Result<Busy> {
    let a = Agent::start(heaptrace, &[])?;
    let mut storm_child =
        Command::new(storm).arg("2000000").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let mut peak_rss = 0;
    let cpu = a.cpu_during(|| {
        writeln!(storm_child.stdin.as_mut().unwrap(), "go")?;
        let end = Instant::now() + window;
        while Instant::now() < end {
            gc_heavy_once(node, root)?;
            peak_rss = peak_rss.max(a.peak_rss()?);
        }
        Ok(())
    })?;
    let _ = storm_child.kill();
    let _ = storm_child.wait();
    let metrics = get("/metrics")?;
    let events: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("heaptrace_events_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    drop(a);
    eprintln!("busy: {:.2} % of a core, peak RSS {} KiB", cpu * 100.0, peak_rss / 1024);
    Ok(Busy { cpu, peak_rss, events })
}

/// One short GC-heavy node process, start to exit, for the agent to trace.
fn gc_heavy_once(node: &Path, root: &Path) -> Result<()> {
    let mut n = Command::new(node)
        .arg(root.join("workloads/gc-heavy.js"))
        .args(["0", "--bursts", "600"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut r = BufReader::new(n.stdout.take().unwrap());
    let mut line = String::new();
    r.read_line(&mut line)?;
    writeln!(n.stdin.as_mut().unwrap(), "go")?;
    for _ in r.lines() {}
    n.wait()?;
    Ok(())
}

/// /metrics with about 1,000 series: per-process series of 112 processes,
/// run from a link to `sleep` under a name of the benchmark's own, so that
/// no other `sleep` on the host adds series.
fn measure_scrape(heaptrace: &Path) -> Result<Scrape> {
    let sleeper = repo_root().join("target/htsleeper");
    let _ = std::fs::remove_file(&sleeper);
    std::fs::copy("/bin/sleep", &sleeper).context("copying /bin/sleep")?;
    let mut sleepers: Vec<Child> =
        (0..112).map(|_| Command::new(&sleeper).arg("600").spawn()).collect::<Result<_, _>>()?;
    let a = Agent::start(heaptrace, &["--comm", "htsleeper", "--per-process", "--interval", "500ms"])?;
    std::thread::sleep(Duration::from_secs(2));
    let body = get("/metrics")?;
    let series = body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count();
    let mut ms = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        get("/metrics")?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let rss = a.rss()?;
    drop(a);
    for s in &mut sleepers {
        let _ = s.kill();
        let _ = s.wait();
    }
    eprintln!("/metrics with {series} series: median {:.2} ms", median(&ms));
    Ok(Scrape { series, ms, rss })
}

fn report(seconds: u64, idle: &Idle, busy: &Busy, scrape: &Scrape) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# `heaptrace agent`: CPU, memory, and time to serve /metrics\n");
    let _ = writeln!(
        s,
        "Host: {} ({} CPUs), kernel {}. `cargo xtask bench-agent --seconds {seconds}`.\n",
        host_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel_release()
    );
    let _ = writeln!(s, "The default agent (`--comm node`, 5 s interval, 4 MiB ring buffer).\n");
    let _ = writeln!(s, "| host | agent CPU, % of one core | agent RSS |");
    let _ = writeln!(s, "|---|---|---|");
    let _ = writeln!(
        s,
        "| idle, {seconds} s | {:.2} | {:.1} MiB |",
        idle.cpu * 100.0,
        idle.rss as f64 / 1048576.0
    );
    let _ = writeln!(
        s,
        "| busy, {seconds} s: GC-heavy node processes one after another ({} kernel events decoded) plus the mmap storm | {:.2} | {:.1} MiB (peak) |",
        busy.events,
        busy.cpu * 100.0,
        busy.peak_rss as f64 / 1048576.0
    );
    let ms = &scrape.ms;
    let _ = writeln!(
        s,
        "\n`GET /metrics` with {} series (`--per-process` over 112 processes), 200 requests: median {:.2} ms, \
         p90 {:.2} ms, max {:.2} ms; agent RSS {:.1} MiB.",
        scrape.series,
        median(ms),
        quantile(ms, 0.9),
        ms.iter().copied().fold(0.0, f64::max),
        scrape.rss as f64 / 1048576.0
    );
    let _ = writeln!(s, "\nThe bar (issue 5): under 1 % of a core and under 50 MB RSS on the busy host.");
    s
}
