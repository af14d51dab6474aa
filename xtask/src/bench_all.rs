//! Host-wide tracing (`heaptrace --all`) while two workloads run at once: a
//! process doing the mmap storm and a GC-heavy Node process. Alternating
//! rounds untraced and traced; reports each workload's slowdown as a ratio,
//! and the collector's CPU and RSS, busy and idle.

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, ChildStdout, Command, Stdio},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};

use crate::bench::{
    Storm, build_c, build_heaptrace, cpu_seconds, host_model, kernel_release, median, peak_rss, quantile,
    repo_root, write_report,
};

struct Run {
    storm_ns_per_iter: f64,
    node_ms: f64,
    /// Traced runs: collector CPU over the busy phase (share of one core),
    /// its peak RSS, processes it traced, events lost.
    collector: Option<Collector>,
}

struct Collector {
    cpu_share: f64,
    peak_rss: u64,
    processes: u64,
    dropped: u64,
}

pub fn host_wide(rounds: usize, iterations: u64, bursts: u64, node: &Path, out: &Path) -> Result<()> {
    ensure!(rounds > 0 && iterations > 0 && bursts > 0, "rounds, iterations and bursts must be positive");
    // SAFETY: geteuid has no preconditions.
    ensure!(unsafe { libc::geteuid() } == 0, "the benchmark loads eBPF programs: run it as root");
    ensure!(node.exists(), "{} is missing: run scripts/fetch-node.sh", node.display());
    let root = repo_root();
    let heaptrace = build_heaptrace(&root)?;
    let storm = build_c(&root, "storm")?;
    let script = root.join("workloads/gc-heavy.js");

    let idle = idle_collector(&heaptrace).context("idle run")?;
    eprintln!("idle host: collector {:.2} % of a core, peak RSS {} MiB", idle.0 * 100.0, idle.1 >> 20);

    let mut runs: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=rounds {
        for traced in [false, true] {
            let run = run_once(&heaptrace, &storm, node, &script, iterations, bursts, traced)
                .with_context(|| format!("round {round}"))?;
            eprintln!(
                "round {round}/{rounds} {:<9} storm {:>8.1} ns/iter, node {:>6.0} ms{}",
                if traced { "traced" } else { "untraced" },
                run.storm_ns_per_iter,
                run.node_ms,
                run.collector.as_ref().map_or(String::new(), |c| format!(
                    ", collector {:.1} % of a core, {} processes",
                    c.cpu_share * 100.0,
                    c.processes
                ))
            );
            runs[usize::from(traced)].push(run);
        }
    }
    write_report(&report(&runs, idle, rounds, iterations, bursts, node), out)
}

/// `heaptrace --all` with its first line (the start record) read.
fn start_collector(heaptrace: &Path) -> Result<(Child, BufReader<ChildStdout>)> {
    let mut child = Command::new(heaptrace)
        .args(["--all", "--interval", "1s", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first)?;
    ensure!(first.contains("\"type\":\"start\""), "heaptrace said {first:?}");
    Ok((child, out))
}

/// Drains the collector's output on a thread (as a consumer would) and
/// returns its last line (the summary) once it ends.
fn drain(out: BufReader<ChildStdout>) -> JoinHandle<String> {
    std::thread::spawn(move || out.lines().map_while(Result::ok).last().unwrap_or_default())
}

fn stop(child: &mut Child) {
    // SAFETY: kill() on our own child's pid with a valid signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
}

/// The collector alone for 10 s on the idle host: CPU share and peak RSS.
fn idle_collector(heaptrace: &Path) -> Result<(f64, u64)> {
    let (mut child, out) = start_collector(heaptrace)?;
    let drained = drain(out);
    let cpu0 = cpu_seconds(child.id())?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let share = (cpu_seconds(child.id())? - cpu0) / t0.elapsed().as_secs_f64();
    let rss = peak_rss(child.id())?;
    stop(&mut child);
    child.wait()?;
    drained.join().ok();
    Ok((share, rss))
}

fn run_once(
    heaptrace: &Path,
    storm: &Path,
    node: &Path,
    script: &Path,
    iterations: u64,
    bursts: u64,
    traced: bool,
) -> Result<Run> {
    let collector = if traced { Some(start_collector(heaptrace)?) } else { None };
    let (collector, drained) = match collector {
        Some((child, out)) => (Some(child), Some(drain(out))),
        None => (None, None),
    };
    // Both workloads start after the collector: host-wide tracing picks
    // them up at exec, as it would any new process.
    let mut storm = Storm::start(storm, iterations)?;
    let (mut n, n_out) = start_node(node, script, bursts)?;

    let cpu0 = collector.as_ref().map(|c| cpu_seconds(c.id())).transpose()?;
    let t0 = Instant::now();
    let (storm_ns_per_iter, node_ms) = run_both(&mut storm, &mut n, n_out)?;
    let busy_s = t0.elapsed().as_secs_f64();
    storm.finish();

    let mut stats = None;
    if let (Some(c), Some(drained), Some(cpu0)) = (collector, drained, cpu0) {
        stats = Some(collector_stats(c, drained, cpu0, busy_s)?);
    }
    std::thread::sleep(Duration::from_millis(300));
    Ok(Run { storm_ns_per_iter, node_ms: node_ms.context("no DONE from node")?, collector: stats })
}

/// The GC-heavy node workload, started and waiting for "go".
fn start_node(node: &Path, script: &Path, bursts: u64) -> Result<(Child, BufReader<ChildStdout>)> {
    let mut n = Command::new(node)
        .arg(script)
        .args(["0", "--bursts", &bursts.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut n_out = BufReader::new(n.stdout.take().unwrap());
    let mut line = String::new();
    n_out.read_line(&mut line)?;
    ensure!(line.trim() == "READY", "node said {line:?}");
    Ok((n, n_out))
}

/// Lets both workloads go at once and waits for node to exit: the storm's
/// ns per iteration, and node's time for its fixed work if it reported one.
fn run_both(storm: &mut Storm, n: &mut Child, n_out: BufReader<ChildStdout>) -> Result<(f64, Option<f64>)> {
    writeln!(n.stdin.as_mut().unwrap(), "go")?;
    let storm_ns_per_iter = storm.go()?;
    let mut node_ms = None;
    for l in n_out.lines() {
        if let Some(ms) = l?.strip_prefix("DONE ") {
            node_ms = ms.trim().parse().ok();
        }
    }
    n.wait()?;
    Ok((storm_ns_per_iter, node_ms))
}

/// Stops the collector and reads what it cost over the busy phase and what
/// its summary says it saw.
fn collector_stats(mut c: Child, drained: JoinHandle<String>, cpu0: f64, busy_s: f64) -> Result<Collector> {
    let cpu_share = (cpu_seconds(c.id())? - cpu0) / busy_s;
    let peak = peak_rss(c.id())?;
    stop(&mut c);
    c.wait()?;
    let summary: serde_json::Value =
        serde_json::from_str(&drained.join().unwrap_or_default()).context("heaptrace's summary")?;
    Ok(Collector {
        cpu_share,
        peak_rss: peak,
        processes: summary["state"]["live_processes"].as_u64().unwrap_or(0)
            + summary["exited_processes"].as_u64().unwrap_or(0),
        dropped: summary["dropped_events"].as_u64().unwrap_or(0),
    })
}

/// Median and quartiles.
fn spread(v: &[f64]) -> (f64, f64, f64) {
    (median(v), quantile(v, 0.25), quantile(v, 0.75))
}

fn report(
    runs: &[Vec<Run>; 2],
    idle: (f64, u64),
    rounds: usize,
    iterations: u64,
    bursts: u64,
    node: &Path,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Host-wide tracing (`heaptrace --all`): overhead on two workloads at once\n");
    let _ = writeln!(
        s,
        "Host: {} ({} CPUs), kernel {}. `cargo xtask bench-all --rounds {rounds} --iterations {iterations} \
         --bursts {bursts}`.\n",
        host_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel_release()
    );
    let _ = writeln!(
        s,
        "Each round runs, untraced and then under `heaptrace --all --interval 1s -o json` (output drained by \
         the benchmark), two workloads started at the same moment: `workloads/storm.c` ({iterations} iterations \
         of mmap 64 KiB, touch, munmap) and `workloads/gc-heavy.js` on {} ({bursts} allocation bursts). Both \
         start after heaptrace, so they are picked up at exec, GC probes included. Medians of {rounds} rounds \
         (interquartile range in brackets).\n",
        node.display()
    );
    workloads_table(&mut s, runs);
    collector_table(&mut s, &runs[1], idle);
    s
}

/// Each workload untraced and traced: the slowdown host-wide tracing causes.
fn workloads_table(s: &mut String, runs: &[Vec<Run>; 2]) {
    let storm: Vec<_> =
        runs.iter().map(|r| spread(&r.iter().map(|x| x.storm_ns_per_iter).collect::<Vec<_>>())).collect();
    let nodes: Vec<_> =
        runs.iter().map(|r| spread(&r.iter().map(|x| x.node_ms).collect::<Vec<_>>())).collect();
    let _ = writeln!(s, "| workload | untraced | traced | ratio |");
    let _ = writeln!(s, "|---|---|---|---|");
    let _ = writeln!(
        s,
        "| mmap storm, ns per iteration | {:.0} [{:.0}–{:.0}] | {:.0} [{:.0}–{:.0}] | {:.3} |",
        storm[0].0,
        storm[0].1,
        storm[0].2,
        storm[1].0,
        storm[1].1,
        storm[1].2,
        storm[1].0 / storm[0].0
    );
    let _ = writeln!(
        s,
        "| GC-heavy node, ms | {:.0} [{:.0}–{:.0}] | {:.0} [{:.0}–{:.0}] | {:.3} |",
        nodes[0].0,
        nodes[0].1,
        nodes[0].2,
        nodes[1].0,
        nodes[1].1,
        nodes[1].2,
        nodes[1].0 / nodes[0].0
    );
}

/// The collector's own CPU and RSS, busy (the traced runs) and idle, and
/// what it traced and lost.
fn collector_table(s: &mut String, traced: &[Run], idle: (f64, u64)) {
    let coll: Vec<&Collector> = traced.iter().filter_map(|r| r.collector.as_ref()).collect();
    let cpu = spread(&coll.iter().map(|c| c.cpu_share * 100.0).collect::<Vec<_>>());
    let rss = coll.iter().map(|c| c.peak_rss).max().unwrap_or(0);
    let procs = median(&coll.iter().map(|c| c.processes as f64).collect::<Vec<_>>());
    let dropped: u64 = coll.iter().map(|c| c.dropped).sum();
    let _ = writeln!(s, "\n| collector | value |");
    let _ = writeln!(s, "|---|---|");
    let _ = writeln!(
        s,
        "| CPU while both workloads run, % of one core | {:.1} [{:.1}–{:.1}] |",
        cpu.0, cpu.1, cpu.2
    );
    let _ = writeln!(s, "| peak RSS (busy), MiB | {:.1} |", rss as f64 / 1048576.0);
    let _ = writeln!(s, "| CPU on the idle host (10 s), % of one core | {:.2} |", idle.0 * 100.0);
    let _ = writeln!(s, "| peak RSS (idle), MiB | {:.1} |", idle.1 as f64 / 1048576.0);
    let _ =
        writeln!(s, "| processes traced during a run, median (any process that ran counts) | {procs:.0} |");
    let _ = writeln!(s, "| events lost, all runs | {dropped} |");
    let _ = writeln!(
        s,
        "\nThe collector's RSS includes the 16 MiB ring buffer, which the kernel maps twice into the \
         reader (32 MiB of address space; the pages it touches count). On a 2-vCPU VM the collector, the \
         storm and node share two cores, so the workloads' slowdown includes the collector's own CPU time."
    );
}
