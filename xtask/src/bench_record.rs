//! What `--record` costs: the mmap storm traced by heaptrace without and
//! with a recording, in alternating rounds; the recording's size; and how
//! fast `heaptrace report` replays it.

use std::{
    fmt::Write as _,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};

use crate::bench::{
    Storm, build_c, build_heaptrace, cpu_seconds, host_model, kernel_release, median, quantile, repo_root,
    wait_for_line, write_report,
};

struct Run {
    ns_per_iter: f64,
    collector_cpu_s: f64,
    /// With --record: the file's size.
    bytes: Option<u64>,
}

pub fn recording_cost(rounds: usize, iterations: u64, out: &Path) -> Result<()> {
    ensure!(rounds > 0 && iterations > 0, "rounds and iterations must be positive");
    // SAFETY: geteuid has no preconditions.
    ensure!(unsafe { libc::geteuid() } == 0, "the benchmark loads eBPF programs: run it as root");
    let root = repo_root();
    let heaptrace = build_heaptrace(&root)?;
    let storm = build_c(&root, "storm")?;
    let file = std::env::temp_dir().join(format!("heaptrace-bench-{}.htrec", std::process::id()));
    let mut plain = Vec::new();
    let mut recorded = Vec::new();
    for round in 1..=rounds {
        for record in [false, true] {
            let run = run_once(&heaptrace, &storm, iterations, record.then_some(file.as_path()))
                .with_context(|| format!("round {round}, record {record}"))?;
            eprintln!(
                "round {round}/{rounds} record={record:<5} {:>9.1} ns/iter, collector {:.3} s",
                run.ns_per_iter, run.collector_cpu_s
            );
            if record { &mut recorded } else { &mut plain }.push(run);
        }
    }
    // Replay speed, on the last round's recording.
    let started = Instant::now();
    let replay = Command::new(&heaptrace)
        .args(["report", file.to_str().unwrap(), "-o", "json"])
        .stdout(Stdio::null())
        .status()?;
    let replay_s = started.elapsed().as_secs_f64();
    ensure!(replay.success(), "heaptrace report failed");
    let _ = std::fs::remove_file(&file);
    write_report(&report(&plain, &recorded, replay_s, rounds, iterations), out)
}

fn run_once(heaptrace: &Path, storm: &Path, iterations: u64, record: Option<&Path>) -> Result<Run> {
    let mut storm = Storm::start(storm, iterations)?;
    let pid = storm.pid().to_string();
    let mut cmd = Command::new(heaptrace);
    cmd.args(["--pid", &pid, "--interval", "1s", "-o", "json"]);
    if let Some(file) = record {
        cmd.arg("--record").arg(file);
    }
    let mut tracer: Child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    wait_for_line(tracer.stdout.take().unwrap(), "\"snapshot\"", true)?;
    let cpu_before = cpu_seconds(tracer.id())?;
    let ns_per_iter = storm.go()?;
    // Let the collector finish the backlog of events before measuring.
    thread::sleep(Duration::from_millis(300));
    let collector_cpu_s = cpu_seconds(tracer.id())? - cpu_before;
    // SAFETY: kill() on our own child's pid.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    tracer.wait()?;
    storm.finish();
    let bytes = record.map(|f| std::fs::metadata(f).map(|m| m.len())).transpose()?;
    Ok(Run { ns_per_iter, collector_cpu_s, bytes })
}

fn report(plain: &[Run], recorded: &[Run], replay_s: f64, rounds: usize, iterations: u64) -> String {
    let ns = |runs: &[Run]| runs.iter().map(|r| r.ns_per_iter).collect::<Vec<_>>();
    let cpu = |runs: &[Run]| runs.iter().map(|r| r.collector_cpu_s).collect::<Vec<_>>();
    let (ns_plain, ns_rec) = (ns(plain), ns(recorded));
    let (cpu_plain, cpu_rec) = (cpu(plain), cpu(recorded));
    let bytes: Vec<f64> = recorded.iter().filter_map(|r| r.bytes).map(|b| b as f64).collect();
    let mut s = String::new();
    let _ = writeln!(s, "# Recording: what --record costs\n");
    let _ =
        writeln!(s, "Command: `sudo cargo xtask bench-record --rounds {rounds} --iterations {iterations}`  ");
    let _ = writeln!(
        s,
        "Workload: workloads/storm.c (mmap 64 KiB, touch 16 pages, munmap: two memory events and an allocation \
         stack per iteration), {iterations} iterations per run, traced by `heaptrace --pid PID --interval 1s -o \
         json` without and with `--record FILE`, alternating, {rounds} rounds.  "
    );
    let _ = writeln!(s, "Machine: {}, kernel {}, 2 CPUs.\n", host_model(), kernel_release());
    let _ = writeln!(s, "| | without --record | with --record | ratio |");
    let _ = writeln!(s, "|---|---:|---:|---:|");
    let (a, b) = (median(&ns_plain), median(&ns_rec));
    let _ = writeln!(
        s,
        "| storm ns/iter, median (quartiles) | {a:.0} ({:.0}–{:.0}) | {b:.0} ({:.0}–{:.0}) | {:.3} |",
        quantile(&ns_plain, 0.25),
        quantile(&ns_plain, 0.75),
        quantile(&ns_rec, 0.25),
        quantile(&ns_rec, 0.75),
        b / a
    );
    let (a, b) = (median(&cpu_plain), median(&cpu_rec));
    let _ = writeln!(s, "| collector CPU per run (s), median | {a:.3} | {b:.3} | {:.2} |", b / a);
    let per_iter = median(&bytes) / iterations as f64;
    let _ = writeln!(
        s,
        "\nRecording size: median {:.0} KiB per run, {per_iter:.1} bytes per storm iteration (two events and \
         their share of the per-second samples).  ",
        median(&bytes) / 1024.0
    );
    let _ = writeln!(
        s,
        "Replay: `heaptrace report FILE -o json > /dev/null` of the last recording took {replay_s:.2} s \
         ({:.0} storm iterations replayed per second).",
        iterations as f64 / replay_s
    );
    s
}
