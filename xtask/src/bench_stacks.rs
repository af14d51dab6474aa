//! What allocation-stack capture costs: two Node workloads run untraced,
//! under `heaptrace --no-stacks` and under `heaptrace` (stacks on), the three
//! in alternation in every round, so that drift on the host hits all alike.
//! The GC-heavy workload (fixed work) gives wall times; an Express-like
//! server under `ab` gives requests/s and p99 latency. The stacks-on runs
//! also say how many stacks the kernel captured (`-v`) and how many
//! allocation sites the summary holds.
//!
//! Wall time on a shared VM is too noisy for the cost of one stack, so every
//! round also runs with `kernel.bpf_stats_enabled=1`: the kernel times each
//! run of heaptrace's memory hook, and the difference between the stacks-on
//! and the --no-stacks run of a round, over the stacks captured, is the
//! kernel's cost per stack. The collector's own CPU time, the same way, is
//! its cost per stack named.

use std::{
    fmt::Write as _,
    fs, io,
    io::{BufRead, BufReader, Read},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    process::{Child, ChildStdout, Command, Stdio},
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{Context, Result, ensure};

use crate::bench::{
    bpf_programs, build_heaptrace, host_model, kernel_release, median, quantile, repo_root, with_bpf_stats,
    write_report,
};
use crate::bench_gc::GcWorkload;

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
    /// Stacks the collector named (each distinct stack once).
    named: Option<u64>,
    /// Allocation sites in the summary, over every process.
    sites: usize,
    /// The collector's CPU time (user + system) from start to exit, s.
    collector_cpu_s: f64,
    /// The memory hook's programs over heaptrace's whole run, as the kernel
    /// timed them: (total run time ns, runs).
    hook: (u64, u64),
    /// Their names.
    hook_names: Vec<String>,
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
    with_bpf_stats(|| {
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
        Ok(())
    })?;
    let report = Report { rounds, bursts, requests, node, gc: &gc, web: &web };
    write_report(&report.render(), out)
}

fn describe(seen: Option<&Seen>) -> String {
    match seen {
        None => String::new(),
        Some(s) => format!(
            ", {} stacks, {} sites, collector {:.2} s CPU, hook {:.1} ms in {} runs",
            s.captured.map_or("no".into(), |c| c.to_string()),
            s.sites,
            s.collector_cpu_s,
            s.hook.0 as f64 / 1e6,
            s.hook.1
        ),
    }
}

/// One GC-heavy run, as bench-gc runs it: heaptrace attaches once node has
/// booted, the fixed work starts, heaptrace ends when node exits.
fn gc_once(node: &Path, script: &Path, bursts: u64, heaptrace: &Path, mode: Mode) -> Result<GcRun> {
    let workload = GcWorkload::start(node, script, bursts)?;
    let tracer = Tracer::start(heaptrace, workload.pid(), mode)?;
    let wall_ms = workload.run()?;
    // heaptrace ends by itself once the workload has exited.
    let seen = tracer.map(|t| t.finish(false)).transpose()?;
    thread::sleep(Duration::from_millis(200));
    Ok(GcRun { wall_ms, seen })
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
    hook: HeldHook,
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
        let hook = match HeldHook::of(child.id()) {
            Ok(hook) => hook,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        Ok(Some(Self { child, summary: drain(out), stderr, hook }))
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
        let (captured, distinct, named) = match parse_stacks_line(&stderr) {
            Some((c, d, n)) => (Some(c), Some(d), Some(n)),
            None => (None, None, None),
        };
        let hook = self.hook.totals()?;
        ensure!(
            hook.1 > 0,
            "the kernel timed no run of {}: was kernel.bpf_stats_enabled turned off meanwhile?",
            self.hook.names.join(", ")
        );
        Ok(Seen { captured, distinct, named, sites, collector_cpu_s, hook, hook_names: self.hook.names })
    }
}

/// heaptrace's memory hook programs, held by fds of our own: a program
/// outlives its loader while an fd holds it (detached, so it runs no more),
/// and its run-time statistics can then be read after heaptrace has exited,
/// when they are complete.
struct HeldHook {
    names: Vec<String>,
    fds: Vec<OwnedFd>,
}

impl HeldHook {
    /// Every program fd of heaptrace `pid` whose program is named `mem_*`
    /// (the memory hook, whichever attachment the loader chose). Another
    /// heaptrace may be running on the host: only this one's fds count.
    fn of(pid: u32) -> Result<Self> {
        let programs = bpf_programs()?;
        // SAFETY: pidfd_open takes a pid and flags; it returns a new fd or -1.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        ensure!(pidfd >= 0, "pidfd_open of heaptrace: {}", io::Error::last_os_error());
        // SAFETY: a new fd that nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
        let mut held = Self { names: Vec::new(), fds: Vec::new() };
        let mut ids = Vec::new();
        for entry in fs::read_dir(format!("/proc/{pid}/fd"))? {
            let path = entry?.path();
            // Programs only: holding a link would keep the program attached.
            if fs::read_link(&path).ok().as_deref() != Some(Path::new("anon_inode:bpf-prog")) {
                continue;
            }
            let Some(fd) = path.file_name().and_then(|f| f.to_str()?.parse::<i32>().ok()) else { continue };
            let Some(id) = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
                .ok()
                .and_then(|i| fdinfo(&i, "prog_id"))
            else {
                continue;
            };
            let Some(program) = programs.iter().find(|p| p.id == id && p.name.starts_with("mem_")) else {
                continue;
            };
            if ids.contains(&id) {
                continue;
            }
            // SAFETY: pidfd_getfd with a live pidfd, an fd number of that
            // process and no flags; it returns a new fd of ours or -1.
            let ours = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
            ensure!(ours >= 0, "pidfd_getfd of heaptrace's fd {fd}: {}", io::Error::last_os_error());
            ids.push(id);
            held.names.push(program.name.clone());
            // SAFETY: a new fd that nothing else owns.
            held.fds.push(unsafe { OwnedFd::from_raw_fd(ours as i32) });
        }
        ensure!(!held.fds.is_empty(), "heaptrace (pid {pid}) holds no memory hook program (mem_*)");
        Ok(held)
    }

    /// The held programs' (total run time ns, runs) so far.
    fn totals(&self) -> Result<(u64, u64)> {
        let mut sum = (0, 0);
        for fd in &self.fds {
            let info = fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
            let field =
                |name| fdinfo(&info, name).with_context(|| format!("no {name} in a program's fdinfo"));
            sum = (sum.0 + field("run_time_ns")?, sum.1 + field("run_cnt")?);
        }
        Ok(sum)
    }
}

/// A numeric field of an fdinfo file ("name:\tvalue").
fn fdinfo(info: &str, name: &str) -> Option<u64> {
    info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
}

fn drain(out: BufReader<ChildStdout>) -> JoinHandle<String> {
    thread::spawn(move || out.lines().map_while(Result::ok).last().unwrap_or_default())
}

/// From `-v`'s "heaptrace: stacks: N captured in the kernel (M distinct,
/// ...); K named, ...": (N, M, K). heaptrace prints no such line when it
/// captured none.
fn parse_stacks_line(stderr: &str) -> Option<(u64, u64, u64)> {
    let rest = stderr.lines().find_map(|l| l.strip_prefix("heaptrace: stacks: "))?;
    let (captured, rest) = rest.split_once(" captured in the kernel (")?;
    let distinct = rest.split_once(" distinct")?.0;
    let named = rest.split_once("); ")?.1.split_once(" named")?.0;
    Some((captured.parse().ok()?, distinct.parse().ok()?, named.parse().ok()?))
}

/// Median with quartiles, as "median [q1–q3]".
fn spread(v: &[f64], decimals: usize) -> String {
    if v.is_empty() {
        return "-".into();
    }
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
        let gc = StackFigures::new(&self.gc[1], &self.gc[2], |r| r.wall_ms / 1e3, |r| r.seen.as_ref());
        let web = StackFigures::new(&self.web[1], &self.web[2], |r| r.taken_s, |r| r.seen.as_ref());
        let figures = [("GC-heavy node", &gc), ("Express-like server", &web)];
        self.stacks_table(&mut s, &figures);
        self.kernel_table(&mut s, &figures);
        self.collector_table(&mut s, &figures);
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
             -n {requests}` makes the measured requests. Requests/s and ab's 99 % latency.\n\n\
             Every round runs with `kernel.bpf_stats_enabled=1` (the kernel times each run of each BPF program; \
             this adds the same small cost to both traced modes).\n"
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
    fn stacks_table(&self, s: &mut String, figures: &[(&str, &StackFigures)]) {
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
             stack |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
        for (name, f) in figures {
            let _ = writeln!(
                s,
                "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} µs | ±{:.0} µs |",
                f.captured, f.distinct, f.per_second, f.sites, f.extra_us, f.noise_us
            );
        }
        let _ = writeln!(
            s,
            "\nThe extra time per stack is an upper bound on what capture costs the allocating thread: it also \
             holds the collector's work on each stack (reading it from the map and naming it), which competes \
             with node for the two shared cores. It also holds the run-to-run noise of this VM: \"noise per \
             stack\" is the interquartile range of the --no-stacks times divided by the stacks of one run. Where \
             the extra time is not well above that noise, it says only that the cost is below it (a negative \
             figure: the difference is all noise). The two tables below measure the two parts of the cost \
             without that noise."
        );
    }

    /// The memory hook as the kernel timed it: the cost per captured stack.
    fn kernel_table(&self, s: &mut String, figures: &[(&str, &StackFigures)]) {
        let names = figures.iter().find_map(|(_, f)| f.hook_names.first()).cloned().unwrap_or_default();
        let _ = writeln!(s, "\n## In the kernel: the memory hook, per captured stack\n");
        let _ = writeln!(
            s,
            "The memory hook is one BPF program ({names}) that runs at every syscall exit on the host, rejects \
             all but the memory syscalls of traced processes, and in the stacks-on mode walks the user stack of \
             those that allocate. Its total run time and runs over each heaptrace run are the kernel's own \
             `run_time_ns` and `run_cnt` for the program (read from an fd of the benchmark's that holds it, once \
             heaptrace has exited): its CPU time, without the tracepoint's dispatch. Kernel ns per captured \
             stack: in each round, (stacks-on run time − --no-stacks run time) / stacks captured, median over the \
             rounds with quartiles. Both runs of a round do the same work, so the difference is the stack walk \
             and the stack map update, plus the hook's extra runs: every syscall exit on the host runs it, and \
             in the stacks-on run the collector, naming stacks, makes syscalls of its own (opening and reading \
             the files it names frames from). Those are rejected before any stack is walked; the last column \
             takes them out at the --no-stacks run's average time per hook run, which also holds the traced \
             process's memory calls and so is more than a rejected run costs: the cost of a stack lies \
             between the two columns. Stacks/s: the rate at which the stacks were captured (per second of the \
             work, as above).\n"
        );
        let _ = writeln!(
            s,
            "| workload | hook runs per run, --no-stacks → stacks on | hook time per run, --no-stacks → stacks on \
             | stacks per run | stacks/s | kernel ns per captured stack | the same, less the extra hook runs |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
        for (name, f) in figures {
            let _ = writeln!(
                s,
                "| {name} | {:.0} → {:.0} | {:.2} ms → {:.2} ms | {:.0} | {:.0} | {} | {} |",
                f.hook_runs.0,
                f.hook_runs.1,
                f.hook_ms.0,
                f.hook_ms.1,
                f.captured,
                f.per_second,
                spread(&f.kernel_ns_per_stack, 0),
                spread(&f.kernel_ns_per_stack_less_runs, 0)
            );
        }
    }

    /// heaptrace's own CPU time: the cost per stack named.
    fn collector_table(&self, s: &mut String, figures: &[(&str, &StackFigures)]) {
        let _ = writeln!(s, "\n## In the collector: heaptrace's own CPU, per stack\n");
        let _ = writeln!(
            s,
            "heaptrace's user + system CPU time from start to exit (`wait4`'s rusage; attaching included, the \
             same in both modes). It names each distinct stack once (native frames with blazesym, JS frames \
             from V8's postmortem metadata) and counts every captured one. Per stack: in each round, \
             (stacks-on CPU − --no-stacks CPU) / stacks named, and / stacks captured, median over the rounds \
             with quartiles. The difference also holds the work the stacks-on mode does once per run (opening \
             the symbol tables of node and its libraries, reading V8's metadata), so a run that names fewer \
             stacks shows more per stack.\n"
        );
        let _ = writeln!(
            s,
            "| workload | collector CPU per run, --no-stacks → stacks on | stacks named per run | CPU per named \
             stack | CPU per captured stack |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|");
        for (name, f) in figures {
            let _ = writeln!(
                s,
                "| {name} | {:.2} s → {:.2} s | {:.0} | {} µs | {} µs |",
                f.cpu.0,
                f.cpu.1,
                f.named,
                spread(&f.cpu_per_named_us, 0),
                spread(&f.cpu_per_captured_us, 1)
            );
        }
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
        let _ = writeln!(
            s,
            "\nThe kernel's and the collector's figures, per round: the memory hook's run time in ms (and runs, in \
             thousands) and heaptrace's CPU time in s, --no-stacks then stacks on; stacks captured and named.\n"
        );
        let _ = writeln!(
            s,
            "| round | GC hook ms (k runs) | stacks / named | collector CPU s | web hook ms (k runs) | stacks / named \
             | collector CPU s |"
        );
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|");
        let hook = |seen: Option<&Seen>| {
            seen.map_or("-".into(), |x| {
                format!("{:.2} ({:.1})", x.hook.0 as f64 / 1e6, x.hook.1 as f64 / 1e3)
            })
        };
        let cpu = |seen: Option<&Seen>| seen.map_or("-".into(), |x| format!("{:.2}", x.collector_cpu_s));
        let named = |seen: Option<&Seen>| {
            let n = |v: Option<u64>| v.map_or("-".into(), |c| c.to_string());
            seen.map_or("-".into(), |x| format!("{} / {}", n(x.captured), n(x.named)))
        };
        for i in 0..self.rounds {
            let (g, w) = (|m: usize| self.gc[m][i].seen.as_ref(), |m: usize| self.web[m][i].seen.as_ref());
            let _ = writeln!(
                s,
                "| {} | {} → {} | {} | {} → {} | {} → {} | {} | {} → {} |",
                i + 1,
                hook(g(1)),
                hook(g(2)),
                named(g(2)),
                cpu(g(1)),
                cpu(g(2)),
                hook(w(1)),
                hook(w(2)),
                named(w(2)),
                cpu(w(1)),
                cpu(w(2)),
            );
        }
    }
}

/// The stacks-on runs of one workload reduced to the report's figures.
struct StackFigures {
    captured: f64,
    distinct: f64,
    named: f64,
    per_second: f64,
    sites: f64,
    /// Median over rounds of (stacks-on − no-stacks time) / stacks, µs.
    extra_us: f64,
    /// The interquartile range of the --no-stacks times over the median
    /// stacks of a run, µs: what run-to-run noise alone puts on `extra_us`.
    noise_us: f64,
    /// The memory hook's program names.
    hook_names: Vec<String>,
    /// Median runs of the memory hook per heaptrace run: (--no-stacks, stacks on).
    hook_runs: (f64, f64),
    /// Median run time of the memory hook per heaptrace run, ms: (--no-stacks, stacks on).
    hook_ms: (f64, f64),
    /// Per round: (stacks-on − no-stacks hook run time) / stacks, ns.
    kernel_ns_per_stack: Vec<f64>,
    /// The same with the stacks-on run's extra hook runs taken out at the
    /// --no-stacks run's time per hook run.
    kernel_ns_per_stack_less_runs: Vec<f64>,
    /// Median collector CPU per run, s: (--no-stacks, stacks on).
    cpu: (f64, f64),
    /// Per round: (stacks-on − no-stacks collector CPU) / stacks named, µs.
    cpu_per_named_us: Vec<f64>,
    /// Per round: the same over stacks captured, µs.
    cpu_per_captured_us: Vec<f64>,
}

impl StackFigures {
    fn new<R>(
        no_stacks: &[R],
        stacks: &[R],
        secs: impl Fn(&R) -> f64,
        seen: impl Fn(&R) -> Option<&Seen>,
    ) -> Self {
        let count = |r: &R, f: fn(&Seen) -> Option<u64>| seen(r).and_then(f).unwrap_or(0) as f64;
        let captured = |r: &R| count(r, |x| x.captured);
        let named = |r: &R| count(r, |x| x.named);
        let of = |f: &dyn Fn(&R) -> f64, runs: &[R]| median(&runs.iter().map(f).collect::<Vec<_>>());
        // Per round, (on − off) / the round's stacks-on count, over rounds
        // that captured any.
        let per_stack = |value: &dyn Fn(&R) -> f64, per: &dyn Fn(&R) -> f64| -> Vec<f64> {
            no_stacks
                .iter()
                .zip(stacks)
                .filter(|(_, on)| per(on) > 0.0)
                .map(|(off, on)| (value(on) - value(off)) / per(on))
                .collect()
        };
        let extra = per_stack(&|r| secs(r) * 1e6, &captured);
        let cpu = |r: &R| seen(r).map_or(0.0, |x| x.collector_cpu_s);
        let cpu_us = |r: &R| cpu(r) * 1e6;
        let hook_ns = |r: &R| seen(r).map_or(0.0, |x| x.hook.0 as f64);
        let hook_runs = |r: &R| seen(r).map_or(0.0, |x| x.hook.1 as f64);
        let less_runs: Vec<f64> = no_stacks
            .iter()
            .zip(stacks)
            .filter(|(off, on)| captured(on) > 0.0 && hook_runs(off) > 0.0)
            .map(|(off, on)| {
                let extra_runs = hook_runs(on) - hook_runs(off);
                (hook_ns(on) - hook_ns(off) - extra_runs * hook_ns(off) / hook_runs(off)) / captured(on)
            })
            .collect();
        let off_secs: Vec<f64> = no_stacks.iter().map(&secs).collect();
        let median_captured = of(&captured, stacks);
        Self {
            noise_us: (quantile(&off_secs, 0.75) - quantile(&off_secs, 0.25)) * 1e6 / median_captured,
            captured: median_captured,
            distinct: of(&|r| count(r, |x| x.distinct), stacks),
            named: of(&named, stacks),
            per_second: of(&|r| captured(r) / secs(r), stacks),
            sites: of(&|r| seen(r).map_or(0.0, |x| x.sites as f64), stacks),
            extra_us: if extra.is_empty() { f64::NAN } else { median(&extra) },
            hook_names: stacks.iter().find_map(|r| seen(r).map(|x| x.hook_names.clone())).unwrap_or_default(),
            hook_runs: (of(&hook_runs, no_stacks), of(&hook_runs, stacks)),
            hook_ms: (of(&hook_ns, no_stacks) / 1e6, of(&hook_ns, stacks) / 1e6),
            kernel_ns_per_stack: per_stack(&hook_ns, &captured),
            kernel_ns_per_stack_less_runs: less_runs,
            cpu: (of(&cpu, no_stacks), of(&cpu, stacks)),
            cpu_per_named_us: per_stack(&cpu_us, &named),
            cpu_per_captured_us: per_stack(&cpu_us, &captured),
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
        assert_eq!(parse_stacks_line(stderr), Some((5166, 1172, 1172)));
        let now = "heaptrace: stacks: 209 captured in the kernel (89 distinct, 1 cut at 48 frames, 6 past code \
                   without frame pointers, 0 of those not recovered, 0 rejected here); 88 named, 0 lost before they \
                   were read; JS frames: 46 named, 8 left as [JS]; 195 frames in no file and no JS function\n";
        assert_eq!(parse_stacks_line(now), Some((209, 89, 88)));
        assert_eq!(parse_stacks_line("heaptrace: memory hook: BTF tracepoint sys_exit\n"), None);
    }

    #[test]
    fn reads_fdinfo() {
        let info = "pos:\t0\nflags:\t02000002\nprog_type:\t26\nprog_id:\t1778\nrun_time_ns:\t123456\n\
                    run_cnt:\t789\n";
        assert_eq!(fdinfo(info, "prog_id"), Some(1778));
        assert_eq!(fdinfo(info, "run_time_ns"), Some(123456));
        assert_eq!(fdinfo(info, "run_cnt"), Some(789));
        assert_eq!(fdinfo(info, "run"), None);
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
