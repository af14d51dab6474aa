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
    fs, io,
    io::{BufRead, BufReader, Read},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    process::{Child, ChildStdout, Command, Stdio},
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{Context, Result, ensure};

use crate::bench::{bpf_programs, build_heaptrace, repo_root, with_bpf_stats, write_report};
use crate::bench_gc::GcWorkload;

mod report;
use report::Report;

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
