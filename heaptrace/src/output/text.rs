//! Human-readable output: one line per process per interval, a line per
//! notable event, and a summary block at the end.

use std::io::{self, Write};

use super::Sink;
use crate::{
    core::{
        Record,
        container::ContainerRef,
        gc::PauseQuantiles,
        input::Origin,
        record::{ProcessSummary, Snapshot, Summary},
    },
    units::{fmt_bytes, fmt_delta, fmt_size_class},
};

/// Process lines shown per group each interval, and per group in the
/// summary (the fastest growers; JSON output has them all).
const SHOWN_PER_GROUP: usize = 5;

pub struct TextSink<W: Write> {
    out: W,
    /// Snapshot lines of the current group: shown so far, and expected.
    group_seen: usize,
    group_size: Option<usize>,
}

impl<W: Write> TextSink<W> {
    pub fn new(out: W) -> Self {
        Self { out, group_seen: 0, group_size: None }
    }
}

/// How a group is named in text: its container, or its cgroup.
fn group_label(container: Option<&ContainerRef>, cgroup_path: &str) -> String {
    match container {
        Some(c) => format!("container {}", container_label(c)),
        None if cgroup_path.is_empty() => "processes with unknown cgroup".into(),
        None => format!("cgroup {cgroup_path}"),
    }
}

fn container_label(c: &ContainerRef) -> String {
    let runtime =
        serde_json::to_value(c.runtime).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let pod = match (&c.namespace, &c.pod, &c.pod_uid) {
        (Some(ns), Some(pod), _) => format!(", pod {ns}/{pod}"),
        (_, _, Some(uid)) => format!(", pod {uid}"),
        _ => String::new(),
    };
    let name = c.container.as_ref().map_or(String::new(), |n| format!(" {n}"));
    format!("{}{name} ({runtime}{pod})", &c.container_id[..12.min(c.container_id.len())])
}

/// `HH:MM:SS` (UTC) of a Unix timestamp.
fn clock(ts: f64) -> String {
    let secs = ts.max(0.0) as u64 % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

fn b(v: u64) -> String {
    fmt_bytes(v as f64)
}

impl<W: Write> Sink for TextSink<W> {
    fn record(&mut self, record: &Record) -> io::Result<()> {
        let o = &mut self.out;
        match record {
            Record::Snapshot(s) => {
                self.group_seen += 1;
                match self.group_size {
                    Some(size) if self.group_seen > SHOWN_PER_GROUP => {
                        if self.group_seen == size {
                            writeln!(
                                o,
                                "{}   ... and {} more processes",
                                clock(s.ts),
                                size - SHOWN_PER_GROUP
                            )?;
                        }
                    }
                    _ => snapshot_line(o, s)?,
                }
            }
            Record::Start(s) => writeln!(
                o,
                "{} tracing {} process{} ({}){}; memory hook: {}",
                clock(s.ts),
                s.processes,
                if s.processes == 1 { "" } else { "es" },
                s.selection,
                if s.follows_new_processes { ", and matching processes as they start" } else { "" },
                s.mem_hook
            )?,
            Record::Container(c) => {
                self.group_seen = 0;
                self.group_size = Some(c.processes);
                let memory = match (c.memory_usage_bytes, c.memory_limit_bytes) {
                    (Some(u), Some(l)) => format!(
                        " | cgroup {} of {} ({} headroom, {})",
                        b(u),
                        b(l),
                        b(l.saturating_sub(u)),
                        fmt_delta(c.memory_usage_growth_bytes.unwrap_or(0))
                    ),
                    (Some(u), None) => {
                        format!(
                            " | cgroup {} (no limit, {})",
                            b(u),
                            fmt_delta(c.memory_usage_growth_bytes.unwrap_or(0))
                        )
                    }
                    _ => String::new(),
                };
                writeln!(
                    o,
                    "{} == {}: {} traced, rss {} ({}){memory}{}",
                    clock(c.ts),
                    group_label(c.container.as_ref(), &c.cgroup_path),
                    c.processes,
                    b(c.rss_bytes),
                    fmt_delta(c.rss_growth_bytes),
                    if c.gc_count > 0 {
                        format!(" | {} GCs, {:.1} ms paused", c.gc_count, c.gc_pause_ns as f64 / 1e6)
                    } else {
                        String::new()
                    }
                )?
            }
            Record::Attach(a) => {
                // Processes found at start show up in the first snapshot;
                // ones that start later are worth a line of their own.
                if a.origin != Origin::Start {
                    writeln!(
                        o,
                        "{} {:>7} {} started ({}), now traced{}{}",
                        clock(a.ts),
                        a.pid,
                        a.comm,
                        if a.origin == Origin::Exec { "exec" } else { "fork" },
                        if a.gc_probes { " with GC probes" } else { "" },
                        a.container
                            .as_ref()
                            .map_or(String::new(), |c| format!(" in container {}", container_label(c)))
                    )?
                }
            }
            Record::Mapping(m) => writeln!(
                o,
                "{} {:>7} {:<6} {:>10} {:<4} {:<5} at {:#x}",
                clock(m.ts),
                m.pid,
                m.op,
                b(m.len),
                m.prot,
                m.backing,
                m.addr
            )?,
            Record::Exit(e) => writeln!(
                o,
                "{} {:>7} {} exited{} after {:.1} s of tracing",
                clock(e.ts),
                e.pid,
                e.comm,
                if e.oom_killed { " (OOM-killed)" } else { "" },
                e.traced_s
            )?,
            Record::Oom(k) => writeln!(
                o,
                "{} {:>7} {} {}: anon rss {}, file rss {}, shmem rss {}, vm {}",
                clock(k.ts),
                k.pid,
                k.comm,
                if k.source == "v8" {
                    "ran out of V8 heap (JavaScript heap out of memory)"
                } else {
                    "chosen by the kernel's OOM killer"
                },
                b(k.anon_rss_bytes),
                b(k.file_rss_bytes),
                b(k.shmem_rss_bytes),
                b(k.vm_bytes)
            )?,
            // Like a `node --trace-gc` line: collector, heap MB before -> after, pause, reason.
            Record::Gc(g) => writeln!(
                o,
                "{} {:>7}:{:<7} {} {:.1} -> {:.1} MB, {:.2} ms {} {}",
                clock(g.ts),
                g.pid,
                g.tid,
                g.collector,
                g.heap_before_bytes as f64 / 1048576.0,
                g.heap_after_bytes as f64 / 1048576.0,
                g.pause_ns as f64 / 1e6,
                if g.marking_steps > 0 {
                    format!(
                        "(+ {:.1} ms in {} steps since start of marking)",
                        g.marking_step_ns as f64 / 1e6,
                        g.marking_steps
                    )
                } else {
                    String::new()
                },
                g.reason
            )?,
            Record::Dropped(d) => writeln!(
                o,
                "{} WARNING: {} events lost ({}), {} in total; mapping figures may be off from here on",
                clock(d.ts),
                d.count,
                d.reason.replace('_', " "),
                d.total
            )?,
            Record::Summary(s) => summary(o, s)?,
        }
        o.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn snapshot_line(o: &mut impl Write, s: &Snapshot) -> io::Result<()> {
    writeln!(
        o,
        "{} {:>7} {:<12} rss {:>10} ({}, {}/s) anon {} file {} | committed {} ({}) mapped {} ({}) brk {} ({}) | mmap {} munmap {}",
        clock(s.ts),
        s.pid,
        s.comm,
        b(s.rss_bytes),
        fmt_delta(s.rss_growth_bytes),
        fmt_delta(s.rss_growth_bytes_per_s as i64),
        b(s.rss_anon_bytes),
        b(s.rss_file_bytes),
        b(s.committed_bytes),
        fmt_delta(s.committed_growth_bytes),
        b(s.mapped_bytes),
        fmt_delta(s.mapped_growth_bytes),
        b(s.brk_bytes),
        fmt_delta(s.brk_growth_bytes),
        s.calls.mmap,
        s.calls.munmap,
    )
}

fn summary(o: &mut impl Write, s: &Summary) -> io::Result<()> {
    writeln!(o)?;
    writeln!(
        o,
        "=== heaptrace summary: {:.1} s, memory hook: {}, events lost: {}",
        s.duration_s, s.mem_hook, s.dropped_events
    )?;
    if s.exited_processes > 0 {
        writeln!(
            o,
            "{} traced processes exited{}",
            s.exited_processes,
            if s.processes_not_listed > 0 {
                format!(" ({} of them not listed: only the latest are kept)", s.processes_not_listed)
            } else {
                String::new()
            }
        )?;
    }
    if s.containers.is_empty() {
        for p in &s.processes {
            process_summary(o, p)?;
        }
        return Ok(());
    }
    let mut listed = vec![false; s.processes.len()];
    for c in &s.containers {
        let g = &c.snapshot;
        writeln!(o)?;
        writeln!(o, "== {}", group_label(g.container.as_ref(), &g.cgroup_path))?;
        let limit = g.memory_limit_bytes.map_or("no limit".to_owned(), |l| format!("limit {}", b(l)));
        if let Some(usage) = g.memory_usage_bytes {
            writeln!(
                o,
                "  cgroup memory: {} ({} since first reading), {limit}{} [{}]",
                b(usage),
                fmt_delta(g.memory_usage_growth_bytes.unwrap_or(0)),
                g.memory_headroom_bytes.map_or(String::new(), |h| format!(", headroom {}", b(h))),
                g.memory_source.as_deref().unwrap_or("")
            )?;
        }
        writeln!(
            o,
            "  processes: {} live (rss {}, {}), {} exited",
            g.processes,
            b(g.rss_bytes),
            fmt_delta(g.rss_growth_bytes),
            g.exited_processes
        )?;
        if g.gc_count > 0 {
            pause_quantiles(o, "  gc ", &c.minor, &c.major)?;
        }
        let mut members: Vec<usize> = (0..s.processes.len())
            .filter(|&i| !listed[i] && g.cgroup_id != 0 && s.processes[i].cgroup_id == g.cgroup_id)
            .collect();
        members.sort_by_key(|&i| std::cmp::Reverse(s.processes[i].rss_growth_bytes));
        for (n, &i) in members.iter().enumerate() {
            listed[i] = true;
            if n < SHOWN_PER_GROUP {
                process_summary(o, &s.processes[i])?;
            }
        }
        if members.len() > SHOWN_PER_GROUP {
            writeln!(
                o,
                "  ... and {} more processes (-o json lists them all)",
                members.len() - SHOWN_PER_GROUP
            )?;
        }
    }
    let rest: Vec<&ProcessSummary> =
        s.processes.iter().zip(&listed).filter(|(_, l)| !**l).map(|(p, _)| p).collect();
    if !rest.is_empty() {
        writeln!(o)?;
        writeln!(o, "== other processes")?;
        for p in rest {
            process_summary(o, p)?;
        }
    }
    Ok(())
}

/// One line per GC kind that had pauses.
fn pause_quantiles(
    o: &mut impl Write,
    indent: &str,
    minor: &PauseQuantiles,
    major: &PauseQuantiles,
) -> io::Result<()> {
    for (kind, q) in [("minor", minor), ("major", major)] {
        if q.count > 0 {
            writeln!(
                o,
                "{indent}{kind:<5} {:>6} pauses, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                q.count, q.p50_ms, q.p90_ms, q.p99_ms, q.max_ms
            )?;
        }
    }
    Ok(())
}

fn process_summary(o: &mut impl Write, p: &ProcessSummary) -> io::Result<()> {
    let state = match (p.exited, p.oom_killed) {
        (_, true) => ", OOM-killed",
        (true, false) => ", exited",
        _ => "",
    };
    let state = if p.replaced_by_exec { ", exec'd another program" } else { state };
    let container =
        p.container.as_ref().map_or(String::new(), |c| format!(", container {}", container_label(c)));
    let ns_pid = match p.ns_pid {
        Some(ns) if ns != p.pid => format!(" (pid {ns} in its namespace)"),
        _ => String::new(),
    };
    writeln!(o, "pid {}{ns_pid} ({}){container}, traced {:.1} s{state}", p.pid, p.comm, p.traced_s)?;
    writeln!(o, "  finding:   {}", p.finding)?;
    writeln!(
        o,
        "  rss:       {} -> {} ({}, {}/s); anon {}, file {}, shmem {}",
        b(p.rss_start_bytes),
        b(p.rss_end_bytes),
        fmt_delta(p.rss_growth_bytes),
        fmt_delta(p.rss_growth_bytes_per_s as i64),
        fmt_delta(p.rss_anon_growth_bytes),
        fmt_delta(p.rss_file_growth_bytes),
        fmt_delta(p.rss_shmem_growth_bytes),
    )?;
    writeln!(
        o,
        "  mappings:  committed {} ({}), mapped {} ({}: anon {}, file {}), brk heap {} ({})",
        b(p.committed_bytes),
        fmt_delta(p.committed_growth_bytes),
        b(p.mapped_bytes),
        fmt_delta(p.mapped_growth_bytes),
        fmt_delta(p.mapped_anon_growth_bytes),
        fmt_delta(p.mapped_file_growth_bytes),
        b(p.brk_bytes),
        fmt_delta(p.brk_growth_bytes),
    )?;
    writeln!(
        o,
        "  calls:     mmap {}, munmap {}, mremap {}, mprotect {}, brk {}; {} large mappings",
        p.calls.mmap, p.calls.munmap, p.calls.mremap, p.calls.mprotect, p.calls.brk, p.large_mappings
    )?;
    if let Some(gc) = &p.gc {
        writeln!(
            o,
            "  gc:        {} pauses ({:.1}/s), {:.1} ms in total, {:.2} % of wall time; heap after last major GC {}",
            gc.count,
            gc.gcs_per_s,
            gc.total_pause_ms,
            gc.pause_time_share * 100.0,
            gc.heap_after_last_major_bytes.map_or("-".into(), b),
        )?;
        writeln!(
            o,
            "    outside pauses: incremental marking {:.1} ms in {} steps, {} marking starts ({:.1} ms), \
             weak callbacks {:.1} ms ({}); GC in all {:.2} % of wall time",
            gc.marking_step_ms,
            gc.marking_steps,
            gc.marking_starts,
            gc.marking_start_ms,
            gc.weak_callback_ms,
            gc.weak_callbacks,
            gc.main_thread_share * 100.0
        )?;
        pause_quantiles(o, "    ", &gc.minor, &gc.major)?;
    }
    if !p.growth_by_chunk_size.is_empty() {
        let classes: Vec<String> = p
            .growth_by_chunk_size
            .iter()
            .take(4)
            .map(|g| {
                format!(
                    "{} chunks {:+} ({})",
                    fmt_size_class(g.chunk_size_bytes),
                    g.chunks_delta,
                    fmt_delta(g.committed_delta_bytes)
                )
            })
            .collect();
        writeln!(o, "  by chunk:  {}", classes.join(", "))?;
    }
    if !p.largest_mappings.is_empty() {
        writeln!(o, "  largest live mappings:")?;
        for m in &p.largest_mappings {
            writeln!(
                o,
                "    {:#014x} {:>10} {}{} (committed {})",
                m.addr,
                b(m.len),
                m.backing,
                if m.shared { " shared" } else { "" },
                b(m.committed_bytes)
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::{ContainerSnapshot, Started};

    fn snap(pid: u32) -> Snapshot {
        Snapshot {
            ts: 0.0,
            pid,
            comm: "node".into(),
            rss_bytes: 0,
            rss_anon_bytes: 0,
            rss_file_bytes: 0,
            rss_shmem_bytes: 0,
            vm_bytes: 0,
            mapped_bytes: 0,
            mapped_anon_bytes: 0,
            mapped_file_bytes: 0,
            committed_bytes: 0,
            brk_bytes: 0,
            calls: Default::default(),
            rss_growth_bytes: 0,
            rss_growth_bytes_per_s: 0.0,
            mapped_growth_bytes: 0,
            committed_growth_bytes: 0,
            brk_growth_bytes: 0,
            cgroup_id: 9,
            container: None,
            ns_pid: None,
            gc_count: 0,
            gc_pause_ns: 0,
            marking_steps: 0,
            marking_step_ns: 0,
            weak_callbacks: 0,
            weak_callback_ns: 0,
            heap_after_last_major_bytes: None,
            heap_limit_bytes: None,
        }
    }

    #[test]
    fn a_large_group_shows_its_top_processes_and_a_count_of_the_rest() {
        let mut out = Vec::new();
        let mut sink = TextSink::new(&mut out);
        let start = Started {
            ts: 0.0,
            selection: "--comm node".into(),
            follows_new_processes: true,
            processes: 7,
            mem_hook: "BTF tracepoint sys_exit".into(),
        };
        sink.record(&Record::Start(start)).unwrap();
        let group = ContainerSnapshot {
            ts: 0.0,
            cgroup_path: "/system.slice/api.service".into(),
            cgroup_id: 9,
            container: None,
            processes: 7,
            exited_processes: 0,
            rss_bytes: 7 << 20,
            rss_growth_bytes: 0,
            committed_growth_bytes: 0,
            memory_usage_bytes: Some(100 << 20),
            memory_usage_growth_bytes: Some(0),
            memory_limit_bytes: Some(256 << 20),
            memory_headroom_bytes: Some(156 << 20),
            memory_source: Some("v2".into()),
            gc_count: 0,
            gc_pause_ns: 0,
        };
        sink.record(&Record::Container(group)).unwrap();
        for pid in 1..=7 {
            sink.record(&Record::Snapshot(snap(pid))).unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("tracing 7 processes (--comm node), and matching processes as they start"));
        assert!(lines[1].contains("== cgroup /system.slice/api.service: 7 traced"), "{}", lines[1]);
        assert!(lines[1].contains("cgroup 100.0 MiB of 256.0 MiB (156.0 MiB headroom"), "{}", lines[1]);
        assert_eq!(lines.len(), 2 + SHOWN_PER_GROUP + 1, "{text}");
        assert!(lines.last().unwrap().ends_with("... and 2 more processes"));
    }
}
