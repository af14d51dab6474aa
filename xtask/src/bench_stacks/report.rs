//! The Markdown report of `cargo xtask bench-stacks`: its tables, and the
//! per-stack figures derived from the rounds.

use std::{fmt::Write as _, path::Path, process::Command, thread};

use super::{AB_CONCURRENCY, GcRun, Seen, WARMUP_REQUESTS, WebRun};
use crate::bench::{host_model, kernel_release, median, quantile};

/// Median with quartiles, as "median [q1–q3]".
fn spread(v: &[f64], decimals: usize) -> String {
    if v.is_empty() {
        return "-".into();
    }
    format!("{:.d$} [{:.d$}–{:.d$}]", median(v), quantile(v, 0.25), quantile(v, 0.75), d = decimals)
}

pub(super) struct Report<'a> {
    pub(super) rounds: usize,
    pub(super) bursts: u64,
    pub(super) requests: u64,
    pub(super) node: &'a Path,
    pub(super) gc: &'a [Vec<GcRun>; 3],
    pub(super) web: &'a [Vec<WebRun>; 3],
}

impl Report<'_> {
    pub(super) fn render(&self) -> String {
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
