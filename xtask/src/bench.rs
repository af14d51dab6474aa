//! The mmap-storm overhead benchmark. See main.rs for what it measures.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

/// One way of running the storm.
#[derive(Clone, Copy, PartialEq)]
enum Setup {
    Untraced,
    Heaptrace(&'static str),
    Bpftrace,
}

impl Setup {
    fn label(self) -> String {
        match self {
            Setup::Untraced => "untraced".into(),
            Setup::Heaptrace(hook) => format!("heaptrace --mem-hook {hook}"),
            Setup::Bpftrace => "bpftrace (sum len per pid, sys_enter_mmap/munmap)".into(),
        }
    }
}

const SETUPS: [Setup; 5] = [
    Setup::Untraced,
    Setup::Heaptrace("btf-tracepoint"),
    Setup::Heaptrace("raw-tracepoint"),
    Setup::Heaptrace("tracepoint"),
    Setup::Bpftrace,
];

/// Calls per neighbour run (workloads/syscalls.c).
const NEIGHBOUR_CALLS: u64 = 300_000;

/// What one run measured.
struct Run {
    ns_per_iter: f64,
    /// heaptrace only: CPU seconds used by the collector during the storm.
    collector_cpu_s: Option<f64>,
    /// heaptrace only: peak RSS of the collector (VmHWM), bytes.
    collector_peak_rss: Option<u64>,
    /// With kernel.bpf_stats_enabled: the tracer's BPF programs during the
    /// storm, (total run time ns, total runs).
    kernel_cost: Option<(u64, u64)>,
}

pub fn mmap_storm(rounds: usize, iterations: u64, out: &Path) -> Result<()> {
    ensure!(rounds > 0 && iterations > 0, "rounds and iterations must be positive");
    // SAFETY: geteuid has no preconditions.
    ensure!(unsafe { libc::geteuid() } == 0, "the benchmark loads eBPF programs: run it as root");
    let root = repo_root();
    let heaptrace = build_heaptrace(&root)?;
    let storm = build_c(&root, "storm")?;
    which("bpftrace").context("bpftrace is missing: run scripts/setup.sh")?;

    // In-kernel cost: one run per tracer with BPF run-time statistics on.
    // Timing every program run adds a little to each run, so these runs are
    // kept out of the end-to-end timing below.
    let mut kernel_costs = Vec::new();
    for &setup in SETUPS.iter().filter(|s| **s != Setup::Untraced) {
        let run = with_bpf_stats(|| run_once(setup, &storm, &heaptrace, iterations, true))
            .with_context(|| format!("in-kernel cost, {}", setup.label()))?;
        let (ns, runs) = run.kernel_cost.unwrap_or_default();
        eprintln!(
            "in-kernel cost {:<55} {:>7.0} ns/iter over {runs} program runs",
            setup.label(),
            ns as f64 / iterations as f64
        );
        kernel_costs.push((setup, ns, runs));
    }

    let mut results: Vec<Vec<Run>> = SETUPS.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        for (i, &setup) in SETUPS.iter().enumerate() {
            let run = run_once(setup, &storm, &heaptrace, iterations, false)
                .with_context(|| format!("round {round}, {}", setup.label()))?;
            eprintln!("round {round}/{rounds} {:<55} {:>9.1} ns/iter", setup.label(), run.ns_per_iter);
            results[i].push(run);
        }
    }

    // The neighbour: the tracer traces an idle process; a busy untraced one
    // is timed.
    let syscalls = build_c(&root, "syscalls")?;
    let mut idle = Command::new("sleep").arg("3600").spawn()?;
    let mut neighbour: Vec<Vec<f64>> = SETUPS.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        for (i, &setup) in SETUPS.iter().enumerate() {
            let ns = neighbour_once(setup, &syscalls, &heaptrace, &idle)
                .with_context(|| format!("neighbour round {round}, {}", setup.label()))?;
            eprintln!("neighbour {round}/{rounds} {:<55} {:>7.1} ns/call", setup.label(), ns);
            neighbour[i].push(ns);
        }
    }
    let _ = idle.kill();
    let _ = idle.wait();

    write_report(&report(&results, &kernel_costs, &neighbour, rounds, iterations), out)
}

/// Prints a benchmark's Markdown report and writes it to `out`.
pub(crate) fn write_report(report: &str, out: &Path) -> Result<()> {
    print!("{report}");
    if let Some(dir) = out.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(out, report).with_context(|| format!("writing {}", out.display()))?;
    eprintln!("written to {}", out.display());
    Ok(())
}

fn run_once(setup: Setup, storm: &Path, heaptrace: &Path, iterations: u64, kernel_cost: bool) -> Result<Run> {
    let mut storm = Storm::start(storm, iterations)?;
    let programs_before = if kernel_cost { bpf_programs()? } else { Vec::new() };
    let pid = storm.child.id().to_string();
    let tracer = start_tracer(setup, &pid, heaptrace)?;
    // The tracer's programs: those that appeared since it started.
    let tracer_programs = |all: Vec<BpfProgram>| -> Vec<BpfProgram> {
        all.into_iter().filter(|p| !programs_before.iter().any(|b| b.id == p.id)).collect()
    };
    let kernel_before = if kernel_cost { tracer_programs(bpf_programs()?) } else { Vec::new() };
    let cpu_before = tracer.as_ref().map(|t| cpu_seconds(t.id())).transpose()?;
    let ns_per_iter = storm.go()?;
    let kernel_cost = if kernel_cost {
        let after = tracer_programs(bpf_programs()?);
        let sum = |ps: &[BpfProgram]| ps.iter().fold((0, 0), |(t, n), p| (t + p.run_time_ns, n + p.run_cnt));
        let ((t1, n1), (t0, n0)) = (sum(&after), sum(&kernel_before));
        Some((t1.saturating_sub(t0), n1.saturating_sub(n0)))
    } else {
        None
    };
    let mut run = Run { ns_per_iter, collector_cpu_s: None, collector_peak_rss: None, kernel_cost };
    if let Some(t) = tracer.as_ref().filter(|_| matches!(setup, Setup::Heaptrace(_))) {
        // Let the collector finish the backlog of events before measuring.
        thread::sleep(Duration::from_millis(300));
        run.collector_cpu_s = Some(cpu_seconds(t.id())? - cpu_before.unwrap_or(0.0));
        run.collector_peak_rss = Some(peak_rss(t.id())?);
    }
    stop_tracer(tracer);
    storm.finish();
    Ok(run)
}

/// Starts `setup`'s tracer on `pid` and waits until it is attached.
fn start_tracer(setup: Setup, pid: &str, heaptrace: &Path) -> Result<Option<Child>> {
    Ok(match setup {
        Setup::Untraced => None,
        Setup::Heaptrace(hook) => {
            let mut child = Command::new(heaptrace)
                .args(["--pid", pid, "--mem-hook", hook, "--interval", "1s", "-o", "json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?;
            // Attached once the first snapshot is out.
            wait_for_line(child.stdout.take().unwrap(), "\"snapshot\"", true)?;
            Some(child)
        }
        Setup::Bpftrace => {
            let script = format!(
                "tracepoint:syscalls:sys_enter_mmap /pid == {pid}/ {{ @mapped[pid] = sum(args->len); }} \
                 tracepoint:syscalls:sys_enter_munmap /pid == {pid}/ {{ @unmapped[pid] = sum(args->len); }}"
            );
            let mut child = Command::new("bpftrace")
                .args(["-e", &script])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?;
            wait_for_line(child.stdout.take().unwrap(), "Attaching", true)?;
            Some(child)
        }
    })
}

/// Stops a tracer with SIGINT (so that it detaches and prints its end),
/// again if it has not gone after 5 s: bpftrace 0.17 can miss a SIGINT that
/// comes right after it attached, and would then run forever.
fn stop_tracer(tracer: Option<Child>) {
    let Some(mut t) = tracer else { return };
    for _ in 0..3 {
        // SAFETY: kill() on our own child's pid.
        unsafe { libc::kill(t.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = t.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = t.kill();
    let _ = t.wait();
}

/// A process that is *not* traced, making non-memory syscalls while the
/// tracer traces another process: what heaptrace costs the rest of the host.
fn neighbour_once(setup: Setup, syscalls: &Path, heaptrace: &Path, traced: &Child) -> Result<f64> {
    let tracer = start_tracer(setup, &traced.id().to_string(), heaptrace)?;
    let out = Command::new(syscalls).arg(NEIGHBOUR_CALLS.to_string()).output()?;
    stop_tracer(tracer);
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .strip_prefix("ns_per_call ")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("syscalls said {text:?}"))
}

/// The storm workload, waiting for "go".
pub(crate) struct Storm {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Storm {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn start(bin: &Path, iterations: u64) -> Result<Self> {
        let mut child = Command::new(bin)
            .arg(iterations.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        ensure!(line.trim() == "ready", "storm said {line:?}");
        Ok(Self { child, stdin, stdout })
    }

    pub(crate) fn go(&mut self) -> Result<f64> {
        writeln!(self.stdin, "go")?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        line.trim()
            .strip_prefix("ns_per_iter ")
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("storm said {line:?}"))
    }

    pub(crate) fn finish(mut self) {
        let _ = writeln!(self.stdin, "exit");
        let _ = self.child.wait();
    }
}

pub(crate) fn wait_for_line(out: ChildStdout, needle: &str, keep_draining: bool) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let needle = needle.to_owned();
    thread::spawn(move || {
        let mut told = false;
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if !told && line.contains(&needle) {
                let _ = tx.send(());
                told = true;
                if !keep_draining {
                    break;
                }
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60)).context("the tracer did not start within 60 s")
}

pub(crate) struct BpfProgram {
    pub(crate) id: u64,
    /// As the kernel keeps it: at most 15 bytes (bpftool may print the full
    /// name from BTF).
    pub(crate) name: String,
    run_time_ns: u64,
    run_cnt: u64,
}

/// Every loaded BPF program with its run-time statistics (bpftool).
pub(crate) fn bpf_programs() -> Result<Vec<BpfProgram>> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
        .context("bpftool is missing: run scripts/setup.sh")?;
    ensure!(out.status.success(), "bpftool prog show failed");
    let programs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).context("bpftool's JSON")?;
    let field = |p: &serde_json::Value, name: &str| p[name].as_u64().unwrap_or(0);
    Ok(programs
        .iter()
        .map(|p| BpfProgram {
            id: field(p, "id"),
            name: p["name"].as_str().unwrap_or_default().to_owned(),
            run_time_ns: field(p, "run_time_ns"),
            run_cnt: field(p, "run_cnt"),
        })
        .collect())
}

/// Runs `f` with kernel.bpf_stats_enabled=1, restoring the old value after.
pub(crate) fn with_bpf_stats<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    const KNOB: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let old = fs::read_to_string(KNOB).context("reading kernel.bpf_stats_enabled")?;
    fs::write(KNOB, "1").context("enabling kernel.bpf_stats_enabled")?;
    let result = f();
    fs::write(KNOB, old.trim()).context("restoring kernel.bpf_stats_enabled")?;
    result
}

pub(crate) fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the ")" of comm: state is field 3; utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("odd /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / clock_ticks_per_second())
}

pub(crate) fn peak_rss(pid: u32) -> Result<u64> {
    status_bytes(pid, "VmHWM")
}

/// A `kB` field of /proc/PID/status, in bytes.
pub(crate) fn status_bytes(pid: u32, field: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(kb * 1024)
}

/// The q-quantile (0..=1) by linear interpolation.
pub(crate) fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

pub(crate) fn median(v: &[f64]) -> f64 {
    quantile(v, 0.5)
}

fn report(
    results: &[Vec<Run>],
    kernel_costs: &[(Setup, u64, u64)],
    neighbour: &[Vec<f64>],
    rounds: usize,
    iterations: u64,
) -> String {
    let untraced = median(&ns_per_iter(&results[0]));
    let mut s = String::new();
    let _ = writeln!(s, "# mmap storm: tracing overhead\n");
    let _ = writeln!(
        s,
        "Command: `sudo cargo xtask bench-mmap --rounds {rounds} --iterations {iterations}`  \n\
         Workload: workloads/storm.c (mmap 64 KiB, touch 16 pages, munmap), {iterations} iterations per run.  \n\
         Machine: {}, kernel {}, {} CPUs.\n",
        host_model(),
        kernel_release(),
        thread::available_parallelism().map_or(0, |n| n.get()),
    );
    end_to_end_section(&mut s, results, rounds, untraced);
    kernel_section(&mut s, kernel_costs, iterations, untraced);
    neighbour_section(&mut s, neighbour, rounds);
    s
}

fn ns_per_iter(runs: &[Run]) -> Vec<f64> {
    runs.iter().map(|r| r.ns_per_iter).collect()
}

/// Storm time per iteration for every setup, with the collector's own CPU
/// and RSS: the whole cost, but as noisy as the host.
fn end_to_end_section(s: &mut String, results: &[Vec<Run>], rounds: usize, untraced: f64) {
    let _ = writeln!(s, "## End to end: storm time per iteration\n");
    let _ = writeln!(
        s,
        "{rounds} rounds; each round runs every setup once, in this order. Medians, with the quartiles. \
         On a VM whose host is busy, identical runs differ by ±10 % or more, in the same process as between \
         processes: read the ratios together with the quartiles, and take the two tables below, which \
         that noise does not reach, for the precise cost.\n"
    );
    let _ = writeln!(
        s,
        "| setup | ns/iter median | quartiles | ratio to untraced | collector CPU per run (s) | collector peak RSS |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for (setup, runs) in SETUPS.iter().zip(results) {
        let ns = ns_per_iter(runs);
        let med = median(&ns);
        let cpu = runs.iter().filter_map(|r| r.collector_cpu_s).collect::<Vec<_>>();
        let rss = runs.iter().filter_map(|r| r.collector_peak_rss).max();
        let _ = writeln!(
            s,
            "| {} | {med:.0} | {:.0}–{:.0} | {:.3} ({:+.1} %) | {} | {} |",
            setup.label(),
            quantile(&ns, 0.25),
            quantile(&ns, 0.75),
            med / untraced,
            (med / untraced - 1.0) * 100.0,
            if cpu.is_empty() { "-".into() } else { format!("{:.3}", median(&cpu)) },
            rss.map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0)),
        );
    }
}

/// The tracers' BPF programs timed by the kernel: their own cost, free of
/// the end-to-end noise.
fn kernel_section(s: &mut String, kernel_costs: &[(Setup, u64, u64)], iterations: u64, untraced: f64) {
    let _ = writeln!(s, "\n## In the kernel: the tracer's BPF programs, per storm iteration\n");
    let _ = writeln!(
        s,
        "One extra run per tracer with `kernel.bpf_stats_enabled=1`: the kernel times every run of every \
         program. This is the programs' own CPU time (system-wide: every syscall exit runs a raw \
         `sys_exit` program), without the hook's dispatch cost and free of the run-to-run noise above.\n"
    );
    let _ = writeln!(
        s,
        "| tracer | program runs per iteration | ns per program run | BPF ns per iteration | share of an untraced iteration |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    for (setup, ns, runs) in kernel_costs {
        let per_iter = *ns as f64 / iterations as f64;
        let _ = writeln!(
            s,
            "| {} | {:.2} | {:.0} | {per_iter:.0} | {:.2} % |",
            setup.label(),
            *runs as f64 / iterations as f64,
            if *runs > 0 { *ns as f64 / *runs as f64 } else { 0.0 },
            per_iter / untraced * 100.0,
        );
    }
}

/// What a syscall hook costs the processes the tracer does not trace.
fn neighbour_section(s: &mut String, neighbour: &[Vec<f64>], rounds: usize) {
    let _ = writeln!(s, "\n## The rest of the host: an untraced neighbour's syscalls\n");
    let _ = writeln!(
        s,
        "While the tracer traces an idle process, an *untraced* process makes {NEIGHBOUR_CALLS} `getppid` \
         calls (workloads/syscalls.c). A syscall hook costs every process on the host; this is that cost. \
         {rounds} rounds, medians.\n"
    );
    let _ = writeln!(s, "| setup | ns per getppid (median) | quartiles | added ns per syscall | ratio |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    let base = median(&neighbour[0]);
    for (setup, ns) in SETUPS.iter().zip(neighbour) {
        let med = median(ns);
        let _ = writeln!(
            s,
            "| {} | {med:.0} | {:.0}–{:.0} | {:+.0} | {:.3} |",
            setup.label(),
            quantile(ns, 0.25),
            quantile(ns, 0.75),
            med - base,
            med / base,
        );
    }
}

pub(crate) fn build_heaptrace(root: &Path) -> Result<PathBuf> {
    let status = Command::new("cargo")
        .args(["build", "--release", "--package", "heaptrace"])
        .current_dir(root)
        .status()?;
    ensure!(status.success(), "building heaptrace failed");
    Ok(root.join("target/release/heaptrace"))
}

pub(crate) fn build_c(root: &Path, name: &str) -> Result<PathBuf> {
    let out = root.join("target").join(name);
    let status = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(root.join("workloads").join(format!("{name}.c")))
        .status()
        .context("a C compiler (cc) is needed")?;
    ensure!(status.success(), "compiling workloads/{name}.c failed");
    Ok(out)
}

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn which(program: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
        .unwrap_or(false);
    if !found {
        bail!("{program} not found in PATH");
    }
    Ok(())
}

pub(crate) fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default()
}

pub(crate) fn host_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}
