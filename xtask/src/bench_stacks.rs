//! What allocation-stack capture costs: two Node workloads run untraced,
//! under `heaptrace --no-stacks` and under `heaptrace` (stacks on), the three
//! in alternation in every round, so that drift on the host hits all alike.
//! The GC-heavy workload (fixed work) gives wall times; an Express-like
//! server under `ab` gives requests/s and p99 latency. The stacks-on runs
//! also say how many stacks the kernel captured (`-v`) and how many
//! allocation sites the summary holds.

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader, Read, Write},
    path::Path,
    process::{Child, ChildStdout, Command, Stdio},
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{Context, Result, ensure};

use crate::bench::{build_heaptrace, host_model, kernel_release, median, quantile, repo_root, write_report};

/// How a workload runs in a round.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Untraced,
    NoStacks,
    Stacks,
}

const MODES: [Mode; 3] = [Mode::Untraced, Mode::NoStacks, Mode::Stacks];

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Untraced => "untraced",
            Mode::NoStacks => "heaptrace --no-stacks",
            Mode::Stacks => "heaptrace (stacks on)",
        }
    }
}

/// Concurrent keep-alive connections of every `ab` run.
const AB_CONCURRENCY: u32 = 20;
/// Untimed requests to a fresh server before the measured run (JIT warm-up).
const WARMUP_REQUESTS: u64 = 1000;

/// What heaptrace said about a traced run.
struct Seen {
    /// From the `-v` stacks line; `None` when there was none (--no-stacks).
    captured: Option<u64>,
    distinct: Option<u64>,
    /// Allocation sites in the summary, over every process.
    sites: usize,
    /// The collector's CPU time (user + system) from start to exit, s.
    collector_cpu_s: f64,
}

struct GcRun {
    wall_ms: f64,
    seen: Option<Seen>,
}

struct WebRun {
    rps: f64,
    p99_ms: f64,
    /// ab's "Time taken for tests", s.
    taken_s: f64,
    seen: Option<Seen>,
}

pub fn stacks(rounds: usize, bursts: u64, requests: u64, node: &Path, out: &Path) -> Result<()> {
    ensure!(rounds > 0 && bursts > 0 && requests > 0, "rounds, bursts and requests must be positive");
    // SAFETY: geteuid has no preconditions.
    ensure!(unsafe { libc::geteuid() } == 0, "the benchmark loads eBPF programs: run it as root");
    ensure!(node.exists(), "{} is missing: run scripts/fetch-node.sh", node.display());
    ensure!(
        Command::new("ab").arg("-V").output().is_ok(),
        "ab is missing: run scripts/setup.sh (apache2-utils)"
    );
    let root = repo_root();
    let heaptrace = build_heaptrace(&root)?;
    let gc_script = root.join("workloads/gc-heavy.js");
    let web_script = root.join("workloads/sites/express-churn.js");

    let mut gc: [Vec<GcRun>; 3] = Default::default();
    let mut web: [Vec<WebRun>; 3] = Default::default();
    for round in 1..=rounds {
        for (i, mode) in MODES.into_iter().enumerate() {
            let run = gc_once(node, &gc_script, bursts, &heaptrace, mode)
                .with_context(|| format!("round {round}, GC-heavy, {}", mode.label()))?;
            eprintln!(
                "round {round}/{rounds} gc  {:<22} {:>7.0} ms{}",
                mode.label(),
                run.wall_ms,
                describe(run.seen.as_ref())
            );
            gc[i].push(run);
        }
        for (i, mode) in MODES.into_iter().enumerate() {
            let run = web_once(node, &web_script, requests, &heaptrace, mode)
                .with_context(|| format!("round {round}, express-churn, {}", mode.label()))?;
            eprintln!(
                "round {round}/{rounds} web {:<22} {:>7.0} req/s, p99 {:.0} ms{}",
                mode.label(),
                run.rps,
                run.p99_ms,
                describe(run.seen.as_ref())
            );
            web[i].push(run);
        }
    }
    let report = Report { rounds, bursts, requests, node, gc: &gc, web: &web };
    write_report(&report.render(), out)
}

fn describe(seen: Option<&Seen>) -> String {
    match seen {
        None => String::new(),
        Some(s) => format!(
            ", {} stacks, {} sites, collector {:.2} s CPU",
            s.captured.map_or("no".into(), |c| c.to_string()),
            s.sites,
            s.collector_cpu_s
        ),
    }
}

/// One GC-heavy run, as bench-gc runs it: heaptrace attaches once node has
/// booted, the fixed work starts, heaptrace ends when node exits.
fn gc_once(node: &Path, script: &Path, bursts: u64, heaptrace: &Path, mode: Mode) -> Result<GcRun> {
    let mut child = Command::new(node)
        .arg(script)
        .args(["0", "--bursts", &bursts.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    ensure!(line.trim() == "READY", "workload said {line:?}");
    let tracer = Tracer::start(heaptrace, child.id(), mode)?;
    writeln!(child.stdin.as_mut().unwrap(), "go")?;
    let mut wall_ms = None;
    for l in stdout.lines() {
        if let Some(ms) = l?.strip_prefix("DONE ") {
            wall_ms = ms.trim().parse().ok();
        }
    }
    child.wait()?;
    // heaptrace ends by itself once the workload has exited.
    let seen = tracer.map(|t| t.finish(false)).transpose()?;
    thread::sleep(Duration::from_millis(200));
    Ok(GcRun { wall_ms: wall_ms.context("no DONE from the workload")?, seen })
}

/// One server run: a fresh express-churn.js, warmed up untraced, then (in
/// the traced modes) heaptrace attaches and `ab` makes the measured requests.
fn web_once(node: &Path, script: &Path, requests: u64, heaptrace: &Path, mode: Mode) -> Result<WebRun> {
    let mut server = Command::new(node).arg(script).stdout(Stdio::piped()).spawn()?;
    let result = (|| {
        let mut stdout = BufReader::new(server.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let port = line.trim().strip_prefix("listening ").with_context(|| format!("server said {line:?}"))?;
        let url = format!("http://127.0.0.1:{port}/");
        ab(&url, WARMUP_REQUESTS).context("warm-up")?;
        let tracer = Tracer::start(heaptrace, server.id(), mode)?;
        let measured = ab(&url, requests);
        let seen = tracer.map(|t| t.finish(true)).transpose()?;
        let (rps, p99_ms, taken_s) = measured?;
        Ok(WebRun { rps, p99_ms, taken_s, seen })
    })();
    let _ = server.kill();
    let _ = server.wait();
    thread::sleep(Duration::from_millis(200));
    result
}

/// `ab -k -c 20 -n <requests>`: (requests/s, p99 ms, time taken s).
fn ab(url: &str, requests: u64) -> Result<(f64, f64, f64)> {
    let out = Command::new("ab")
        .args(["-q", "-k", "-c", &AB_CONCURRENCY.to_string(), "-n", &requests.to_string(), url])
        .output()
        .context("running ab")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "ab failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    parse_ab(&text, requests)
}

/// Requests/s, the 99 % line of the percentile table (ms), and the time
/// taken, from ab's report; every request must have completed with a 2xx.
fn parse_ab(text: &str, requests: u64) -> Result<(f64, f64, f64)> {
    let field = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim_start_matches([' ', ':']).split_whitespace().next()?.parse().ok())
    };
    let complete = field("Complete requests").context("ab: no Complete requests")?;
    let failed = field("Failed requests").context("ab: no Failed requests")?;
    let non_2xx = field("Non-2xx responses").unwrap_or(0.0);
    ensure!(
        complete == requests as f64 && failed == 0.0 && non_2xx == 0.0,
        "ab: {complete} of {requests} requests complete, {failed} failed, {non_2xx} not 2xx"
    );
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| v.trim().parse().ok())
        .context("ab: no 99% line")?;
    Ok((
        field("Requests per second").context("ab: no Requests per second")?,
        p99,
        field("Time taken for tests").context("ab: no Time taken for tests")?,
    ))
}

/// A running heaptrace, its stdout and stderr drained on threads.
struct Tracer {
    child: Child,
    /// The last stdout line: the summary.
    summary: JoinHandle<String>,
    stderr: JoinHandle<String>,
}

impl Tracer {
    /// Starts heaptrace on `pid` (nothing when untraced) and waits until it
    /// has attached: its first line (the start record) is out.
    fn start(heaptrace: &Path, pid: u32, mode: Mode) -> Result<Option<Self>> {
        if mode == Mode::Untraced {
            return Ok(None);
        }
        let mut child = Command::new(heaptrace)
            .args(["--pid", &pid.to_string(), "--interval", "1s", "-o", "json", "-v"])
            .args((mode == Mode::NoStacks).then_some("--no-stacks"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stderr = child.stderr.take().unwrap();
        let stderr = thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first)?;
        ensure!(first.contains("\"type\":\"start\""), "heaptrace said {first:?}");
        Ok(Some(Self { child, summary: drain(out), stderr }))
    }

    /// Waits for heaptrace to end (after a SIGINT if `interrupt`) and reads
    /// what it saw and what it cost.
    fn finish(self, interrupt: bool) -> Result<Seen> {
        let pid = self.child.id() as i32;
        if interrupt {
            // SAFETY: kill() on our own child's pid with a valid signal number.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let mut status = 0;
        // SAFETY: a zeroed rusage is a valid value to be overwritten.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 on our own child's pid with pointers to live locals;
        // the Child is not waited on again after this.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        ensure!(reaped == pid, "waiting for heaptrace: {}", std::io::Error::last_os_error());
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let collector_cpu_s = secs(usage.ru_utime) + secs(usage.ru_stime);
        let stderr = self.stderr.join().unwrap_or_default();
        ensure!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "heaptrace failed (wait status {status}): {stderr}"
        );
        let summary: serde_json::Value =
            serde_json::from_str(&self.summary.join().unwrap_or_default()).context("heaptrace's summary")?;
        let sites = summary["processes"]
            .as_array()
            .map_or(0, |ps| ps.iter().filter_map(|p| p["allocation_sites"].as_array()).map(Vec::len).sum());
        let (captured, distinct) = parse_stacks_line(&stderr).unzip();
        Ok(Seen { captured, distinct, sites, collector_cpu_s })
    }
}

fn drain(out: BufReader<ChildStdout>) -> JoinHandle<String> {
    thread::spawn(move || out.lines().map_while(Result::ok).last().unwrap_or_default())
}

/// From `-v`'s "heaptrace: stacks: N captured in the kernel (M distinct,
/// ...": (N, M). heaptrace prints no such line when it captured none.
fn parse_stacks_line(stderr: &str) -> Option<(u64, u64)> {
    let rest = stderr.lines().find_map(|l| l.strip_prefix("heaptrace: stacks: "))?;
    let (captured, rest) = rest.split_once(" captured in the kernel (")?;
    let distinct = rest.split_once(" distinct")?.0;
    Some((captured.parse().ok()?, distinct.parse().ok()?))
}

/// Median with quartiles, as "median [q1–q3]".
fn spread(v: &[f64], decimals: usize) -> String {
    format!("{:.d$} [{:.d$}–{:.d$}]", median(v), quantile(v, 0.25), quantile(v, 0.75), d = decimals)
}

struct Report<'a> {
    rounds: usize,
    bursts: u64,
    requests: u64,
    node: &'a Path,
    gc: &'a [Vec<GcRun>; 3],
    web: &'a [Vec<WebRun>; 3],
}

impl Report<'_> {
    fn render(&self) -> String {
        let mut s = String::new();
        self.header(&mut s);
        self.overhead_table(&mut s);
        self.stacks_table(&mut s);
        self.raw_rounds(&mut s);
        s
    }

    fn header(&self, s: &mut String) {
        let (rounds, bursts, requests) = (self.rounds, self.bursts, self.requests);
        let node_version = Command::new(self.node)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let _ = writeln!(s, "# Allocation-stack capture: what it costs a Node process\n");
        let _ = writeln!(
            s,
            "Command: `sudo cargo xtask bench-stacks --rounds {rounds} --bursts {bursts} --requests {requests}`  \n\
             Machine: {} ({} CPUs), kernel {}. Node {node_version} ({}).\n",
            host_model(),
            thread::available_parallelism().map_or(0, |n| n.get()),
            kernel_release(),
            self.node.display(),
        );
        let _ = writeln!(
            s,
            "Three modes, in this order in each of {rounds} rounds: untraced; `heaptrace --pid P --interval 1s \
             -o json -v --no-stacks`; the same without `--no-stacks` (a user stack, walked by frame pointers in \
             the kernel, at every mmap/mprotect of writable memory of at least 64 KiB and every brk). Two \
             workloads per round:\n\n\
             * **GC-heavy node**: workloads/gc-heavy.js, {bursts} allocation bursts (fixed work), as `cargo xtask \
             bench-gc` runs it: heaptrace attaches once node has booted and ends when node exits. Wall time of \
             the work.\n\
             * **Express-like server**: workloads/sites/express-churn.js (the tiny router of \
             workloads/diagnosis/express-leak.js; the handler allocates `new Array(100000)`, about 800 KB that \
             V8 maps on its own, does some string work, responds and drops it all). A fresh server per run, \
             {WARMUP_REQUESTS} untimed requests untraced, then heaptrace attaches and `ab -k -c {AB_CONCURRENCY} \
             -n {requests}` makes the measured requests. Requests/s and ab's 99 % latency.\n"
        );
    }

    /// Each mode's medians and the three ratios between them.
    fn overhead_table(&self, s: &mut String) {
        let _ = writeln!(s, "## Summary\n");
        let _ = writeln!(
            s,
            "Medians with quartiles in brackets. Ratios are of medians, the traced mode's over the other's \
             (for requests/s below 1 means slower, for times above 1 means slower).\n"
        );
        let _ = writeln!(
            s,
            "| workload, metric | untraced | --no-stacks | stacks on | no-stacks / untraced | stacks / untraced | \
             stacks / no-stacks |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
        let gc_ms: Vec<Vec<f64>> = self.gc.iter().map(|r| r.iter().map(|x| x.wall_ms).collect()).collect();
        let rps: Vec<Vec<f64>> = self.web.iter().map(|r| r.iter().map(|x| x.rps).collect()).collect();
        let p99: Vec<Vec<f64>> = self.web.iter().map(|r| r.iter().map(|x| x.p99_ms).collect()).collect();
        for (name, v, decimals) in [
            ("GC-heavy node, wall ms", &gc_ms, 0),
            ("Express-like server, requests/s", &rps, 0),
            ("Express-like server, p99 ms", &p99, 1),
        ] {
            let m: Vec<f64> = v.iter().map(|x| median(x)).collect();
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} | {:.3} | {:.3} | {:.3} |",
                spread(&v[0], decimals),
                spread(&v[1], decimals),
                spread(&v[2], decimals),
                m[1] / m[0],
                m[2] / m[0],
                m[2] / m[1],
            );
        }
    }

    /// The stacks-on runs: how many stacks, how fast, and the time each cost
    /// over the same round's --no-stacks run.
    fn stacks_table(&self, s: &mut String) {
        let no_stacks_no_sites = (self.gc[1].iter().map(|r| r.seen.as_ref()))
            .chain(self.web[1].iter().map(|r| r.seen.as_ref()))
            .all(|x| x.is_some_and(|x| x.sites == 0));
        let _ = writeln!(s, "\n## The stacks\n");
        let _ = writeln!(
            s,
            "Stacks captured per run and distinct stacks: heaptrace's `-v` line. Allocation sites: the length of \
             `processes[].allocation_sites` in the `-o json` summary (0 in every --no-stacks run: {}). Extra time \
             per stack: in each round, (stacks-on time − --no-stacks time) / stacks captured, median over the \
             rounds; time is the wall time of the GC work, and ab's time for the measured requests (so stacks/s is \
             per second of that time).\n",
            if no_stacks_no_sites { "checked" } else { "NOT SO: some had sites" }
        );
        let _ = writeln!(
            s,
            "| workload | stacks per run | distinct | stacks/s | allocation sites | extra time per stack | noise per \
             stack | collector CPU per run, --no-stacks → stacks on |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
        let gc_secs = |r: &GcRun| r.wall_ms / 1e3;
        let web_secs = |r: &WebRun| r.taken_s;
        let gc = StackFigures::new(&self.gc[1], &self.gc[2], gc_secs, |r| r.seen.as_ref());
        let web = StackFigures::new(&self.web[1], &self.web[2], web_secs, |r| r.seen.as_ref());
        for (name, f) in [("GC-heavy node", gc), ("Express-like server", web)] {
            let _ = writeln!(
                s,
                "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} µs | ±{:.0} µs | {:.2} s → {:.2} s |",
                f.captured, f.distinct, f.per_second, f.sites, f.extra_us, f.noise_us, f.cpu.0, f.cpu.1
            );
        }
        let _ = writeln!(
            s,
            "\nThe extra time per stack is an upper bound on what the kernel's stack walk costs the allocating \
             thread: it also holds the collector's work on each stack (reading it from the map and naming it), \
             which competes with node for the two shared cores. It also holds the run-to-run noise of this VM: \
             \"noise per stack\" is the interquartile range of the --no-stacks times divided by the stacks of \
             one run. Where the extra time is not well above that noise, it says only that the cost is below \
             it (a negative figure: the difference is all noise). The collector's CPU time (start to exit, \
             attaching included) shows the part of the cost that runs outside node."
        );
    }

    fn raw_rounds(&self, s: &mut String) {
        let _ = writeln!(s, "\n## Raw rounds\n");
        let _ = writeln!(
            s,
            "| round | GC ms: untraced | --no-stacks | stacks on | stacks | sites | web req/s: untraced | \
             --no-stacks | stacks on | p99 ms: untraced | --no-stacks | stacks on | stacks | sites |"
        );
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let stacks =
            |seen: Option<&Seen>| seen.and_then(|x| x.captured).map_or("-".into(), |c| c.to_string());
        let sites = |seen: Option<&Seen>| seen.map_or("-".into(), |x| x.sites.to_string());
        for i in 0..self.rounds {
            let (g, w) = (|m: usize| &self.gc[m][i], |m: usize| &self.web[m][i]);
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.0} | {:.0} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |",
                i + 1,
                g(0).wall_ms,
                g(1).wall_ms,
                g(2).wall_ms,
                stacks(g(2).seen.as_ref()),
                sites(g(2).seen.as_ref()),
                w(0).rps,
                w(1).rps,
                w(2).rps,
                w(0).p99_ms,
                w(1).p99_ms,
                w(2).p99_ms,
                stacks(w(2).seen.as_ref()),
                sites(w(2).seen.as_ref()),
            );
        }
    }
}

/// The stacks-on runs of one workload reduced to the report's figures.
struct StackFigures {
    captured: f64,
    distinct: f64,
    per_second: f64,
    sites: f64,
    /// Median over rounds of (stacks-on − no-stacks time) / stacks, µs.
    extra_us: f64,
    /// The interquartile range of the --no-stacks times over the median
    /// stacks of a run, µs: what run-to-run noise alone puts on `extra_us`.
    noise_us: f64,
    /// Median collector CPU per run, s: (--no-stacks, stacks on).
    cpu: (f64, f64),
}

impl StackFigures {
    fn new<R>(
        no_stacks: &[R],
        stacks: &[R],
        secs: impl Fn(&R) -> f64,
        seen: impl Fn(&R) -> Option<&Seen>,
    ) -> Self {
        let captured = |r: &R| seen(r).and_then(|x| x.captured).unwrap_or(0) as f64;
        let of = |f: &dyn Fn(&R) -> f64, runs: &[R]| median(&runs.iter().map(f).collect::<Vec<_>>());
        let extra: Vec<f64> = no_stacks
            .iter()
            .zip(stacks)
            .filter(|(_, on)| captured(on) > 0.0)
            .map(|(off, on)| (secs(on) - secs(off)) * 1e6 / captured(on))
            .collect();
        let cpu = |r: &R| seen(r).map_or(0.0, |x| x.collector_cpu_s);
        let off_secs: Vec<f64> = no_stacks.iter().map(&secs).collect();
        let median_captured = of(&captured, stacks);
        Self {
            noise_us: (quantile(&off_secs, 0.75) - quantile(&off_secs, 0.25)) * 1e6 / median_captured,
            captured: median_captured,
            distinct: of(&|r| seen(r).and_then(|x| x.distinct).unwrap_or(0) as f64, stacks),
            per_second: of(&|r| captured(r) / secs(r), stacks),
            sites: of(&|r| seen(r).map_or(0.0, |x| x.sites as f64), stacks),
            extra_us: if extra.is_empty() { f64::NAN } else { median(&extra) },
            cpu: (of(&cpu, no_stacks), of(&cpu, stacks)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_stacks_line() {
        let stderr = "heaptrace: memory hook: BTF tracepoint sys_exit\n\
                      heaptrace: stacks: 5166 captured in the kernel (1172 distinct, 134 cut at 48 frames); 1172 named\n";
        assert_eq!(parse_stacks_line(stderr), Some((5166, 1172)));
        assert_eq!(parse_stacks_line("heaptrace: memory hook: BTF tracepoint sys_exit\n"), None);
    }

    #[test]
    fn reads_ab() {
        let text = "Time taken for tests:   2.471 seconds\nComplete requests:      5000\n\
                    Failed requests:        0\nRequests per second:    2023.53 [#/sec] (mean)\n\
                    Percentage of the requests served within a certain time (ms)\n  50%      9\n  99%     20\n \
                    100%     41 (longest request)\n";
        assert_eq!(parse_ab(text, 5000).unwrap(), (2023.53, 20.0, 2.471));
        assert!(parse_ab(text, 6000).is_err());
        let failed = text.replace("Failed requests:        0", "Failed requests:        3");
        assert!(parse_ab(&failed, 5000).is_err());
    }
}
