//! Human-readable output: one line per process per interval, a line per
//! notable event, and a summary block at the end.

use std::io::{self, Write};

mod heap;
mod summary;

pub use heap::write_heap_report;

use super::Sink;
use crate::{
    core::{
        Record,
        container::ContainerRef,
        input::Origin,
        record::{
            Attached, Backing, Death, Dropped, Exit, Gc, GroupSnapshot, LargeMapping, MappingsSummary, Oom,
            OomSource, Snapshot, Started, Verdict, VerdictChange, VerdictState,
        },
    },
    units::{fmt_bytes, fmt_delta, fmt_duration},
};

/// Process lines shown per group each interval, and per group in the
/// summary (the fastest growers; JSON output has them all).
pub(super) const SHOWN_PER_GROUP: usize = 5;

pub struct TextSink<W: Write> {
    out: W,
    /// A line per GC and per large mapping (`--events`); else the
    /// mappings are summed per interval and GCs left to the summary.
    events: bool,
    /// Snapshot lines of the current group: shown so far, and expected.
    group_seen: usize,
    group_size: Option<usize>,
}

impl<W: Write> TextSink<W> {
    pub fn new(out: W, events: bool) -> Self {
        Self { out, events, group_seen: 0, group_size: None }
    }
}

/// How a group is named in text: its container, or its cgroup.
pub(crate) fn group_label(container: Option<&ContainerRef>, cgroup_path: &str) -> String {
    match container {
        Some(c) => format!("container {}", container_label(c)),
        None if cgroup_path.is_empty() => "processes with unknown cgroup".into(),
        None => format!("cgroup {cgroup_path}"),
    }
}

pub(crate) fn container_label(c: &ContainerRef) -> String {
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
pub(crate) fn clock(ts: f64) -> String {
    let secs = ts.max(0.0) as u64 % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

pub(super) fn b(v: u64) -> String {
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
                            let more = size - SHOWN_PER_GROUP;
                            writeln!(o, "{}   ... and {more} more processes", clock(s.ts))?;
                        }
                    }
                    _ => snapshot_line(o, s)?,
                }
            }
            Record::Group(g) => {
                self.group_seen = 0;
                self.group_size = Some(g.processes);
                group_line(o, g)?;
            }
            Record::Start(s) => start_line(o, s)?,
            Record::Attach(a) => attach_line(o, a)?,
            Record::Mapping(m) if self.events => mapping_line(o, m)?,
            Record::Gc(g) if self.events => gc_line(o, g)?,
            Record::Mapping(_) | Record::Gc(_) => {}
            Record::Mappings(m) if !self.events => mappings_line(o, m)?,
            Record::Mappings(_) => {}
            Record::Exit(e) => exit_line(o, e)?,
            // The death line that follows says it all, with the same figures.
            Record::Oom(k) if self.events => oom_line(o, k)?,
            Record::Oom(_) => {}
            Record::Dropped(d) => dropped_line(o, d)?,
            Record::Summary(s) => summary::summary(o, s)?,
            Record::Verdict(v) => verdict_line(o, v)?,
            Record::Heap(h) => {
                writeln!(o, "--- heap of pid {} (--on-leak) ---", h.pid)?;
                write_heap_report(o, h, 10)?;
                writeln!(o, "---")?;
            }
            Record::Death(d) => death_line(o, d)?,
        }
        o.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn start_line(o: &mut impl Write, s: &Started) -> io::Result<()> {
    writeln!(
        o,
        "{} tracing {} process{} ({}){}; memory hook: {}",
        clock(s.ts),
        s.processes,
        if s.processes == 1 { "" } else { "es" },
        s.selection,
        if s.follows_new_processes { ", and matching processes as they start" } else { "" },
        s.mem_hook
    )
}

/// A group's line, before its processes': its RSS, the cgroup's own
/// usage, limit and headroom, and its GC pauses.
fn group_line(o: &mut impl Write, g: &GroupSnapshot) -> io::Result<()> {
    let growth = fmt_delta(g.memory_usage_growth_bytes.unwrap_or(0));
    let memory = match (g.memory_usage_bytes, g.memory_limit_bytes) {
        (Some(u), Some(l)) => {
            format!(" | cgroup {} of {} ({} headroom, {growth})", b(u), b(l), b(l.saturating_sub(u)))
        }
        (Some(u), None) => format!(" | cgroup {} (no limit, {growth})", b(u)),
        _ => String::new(),
    };
    let gc = if g.gc_count > 0 {
        format!(" | {} GCs, {:.1} ms paused", g.gc_count, g.gc_pause_ns as f64 / 1e6)
    } else {
        String::new()
    };
    let forecast = match (g.verdict.time_to_limit_s, g.verdict.limit) {
        (Some(t), Some(limit)) => format!(" | {} limit in {}", limit.name(), fmt_duration(t)),
        _ => String::new(),
    };
    writeln!(
        o,
        "{} == {}: {}, {} traced, rss {} ({}){memory}{gc}{forecast}",
        clock(g.ts),
        group_label(g.container.as_ref(), &g.cgroup_path),
        verdict_label(&g.verdict),
        g.processes,
        b(g.rss_bytes),
        fmt_delta(g.rss_growth_bytes),
    )
}

/// Processes found at start show up in the first snapshot; ones that
/// start later are worth a line of their own.
fn attach_line(o: &mut impl Write, a: &Attached) -> io::Result<()> {
    if a.origin == Origin::Start {
        return Ok(());
    }
    writeln!(
        o,
        "{} {:>7} {} started ({}), now traced{}{}",
        clock(a.ts),
        a.pid,
        a.comm,
        if a.origin == Origin::Exec { "exec" } else { "fork" },
        if a.gc_probes { " with GC probes" } else { "" },
        a.container.as_ref().map_or(String::new(), |c| format!(" in container {}", container_label(c)))
    )
}

fn mapping_line(o: &mut impl Write, m: &LargeMapping) -> io::Result<()> {
    writeln!(
        o,
        "{} {:>7} {:<6} {:>10} {:<4} {:<5} at {:#x}{}",
        clock(m.ts),
        m.pid,
        m.op.name(),
        b(m.len),
        m.prot,
        m.backing.map_or("", Backing::name),
        m.addr,
        m.site.as_ref().map_or(String::new(), |s| format!(" from {s}"))
    )
}

/// The large mappings of an interval, in one line.
fn mappings_line(o: &mut impl Write, m: &MappingsSummary) -> io::Result<()> {
    let mut parts = Vec::new();
    if m.mapped > 0 {
        let each = if m.mapped_bytes == m.typical_len * m.mapped {
            format!(", {} each", b(m.typical_len))
        } else {
            format!(", mostly {}", b(m.typical_len))
        };
        parts.push(format!(
            "{} large mapping{}{each}, +{}",
            m.mapped,
            if m.mapped == 1 { "" } else { "s" },
            b(m.mapped_bytes)
        ));
    }
    if m.unmapped > 0 {
        parts.push(format!("{} unmapped, -{}", m.unmapped, b(m.unmapped_bytes)));
    }
    writeln!(o, "{} {:>7}   {} (--events lists them)", clock(m.ts), m.pid, parts.join("; "))
}

/// A verdict that changed, with its evidence.
fn verdict_line(o: &mut impl Write, v: &VerdictChange) -> io::Result<()> {
    let who = match (v.pid, &v.comm) {
        (Some(pid), Some(comm)) => format!("{pid:>7} {comm}"),
        _ => group_label(v.container.as_ref(), &v.cgroup_path),
    };
    // The evidence starts with the new state, in words.
    writeln!(o, "{} {who}: verdict was {}, now {}", clock(v.ts), v.previous.name(), v.verdict.evidence)
}

/// `leak (js-heap)`, `steady`.
pub(crate) fn verdict_label(v: &Verdict) -> String {
    match (v.state, v.memory) {
        (VerdictState::Steady | VerdictState::Unknown, _) | (_, None) => v.state.name().to_owned(),
        (state, Some(m)) => format!("{} ({})", state.name(), m.name()),
    }
}

fn death_line(o: &mut impl Write, d: &Death) -> io::Result<()> {
    writeln!(o, "{} {:>7} {} DIED ({}): {}", clock(d.ts), d.pid, d.comm, d.cause.name(), d.explanation)?;
    if let Some(path) = &d.dump_path {
        writeln!(o, "{} {:>7}   its last minutes (memory, GCs, verdicts) are in {path}", clock(d.ts), d.pid)?;
    }
    Ok(())
}

fn exit_line(o: &mut impl Write, e: &Exit) -> io::Result<()> {
    writeln!(
        o,
        "{} {:>7} {} exited{} after {:.1} s of tracing",
        clock(e.ts),
        e.pid,
        e.comm,
        if e.oom_killed { " (OOM-killed)" } else { "" },
        e.traced_s
    )
}

fn oom_line(o: &mut impl Write, k: &Oom) -> io::Result<()> {
    writeln!(
        o,
        "{} {:>7} {} {}: anon rss {}, file rss {}, shmem rss {}, vm {}",
        clock(k.ts),
        k.pid,
        k.comm,
        match k.source {
            OomSource::V8 => "ran out of V8 heap (JavaScript heap out of memory)",
            OomSource::Kernel => "chosen by the kernel's OOM killer",
        },
        b(k.anon_rss_bytes),
        b(k.file_rss_bytes),
        b(k.shmem_rss_bytes),
        b(k.vm_bytes)
    )
}

/// Like a `node --trace-gc` line: collector, heap MB before -> after, pause, reason.
fn gc_line(o: &mut impl Write, g: &Gc) -> io::Result<()> {
    let marking = if g.marking_steps > 0 {
        format!(
            "(+ {:.1} ms in {} steps since start of marking)",
            g.marking_step_ns as f64 / 1e6,
            g.marking_steps
        )
    } else {
        String::new()
    };
    writeln!(
        o,
        "{} {:>7}:{:<7} {} {:.1} -> {:.1} MB, {:.2} ms {marking} {}",
        clock(g.ts),
        g.pid,
        g.tid,
        g.collector,
        g.heap_before_bytes as f64 / 1048576.0,
        g.heap_after_bytes as f64 / 1048576.0,
        g.pause_ns as f64 / 1e6,
        g.reason
    )
}

fn dropped_line(o: &mut impl Write, d: &Dropped) -> io::Result<()> {
    writeln!(
        o,
        "{} WARNING: {} events lost ({}), {} in total; mapping figures may be off from here on",
        clock(d.ts),
        d.count,
        d.reason.words(),
        d.total
    )
}

/// One line per process per interval: its verdict first, then RSS, the
/// JS heap against V8's limit, native memory and the nearest limit.
fn snapshot_line(o: &mut impl Write, s: &Snapshot) -> io::Result<()> {
    let heap =
        match (s.heap_after_last_major_bytes, s.v8_old_generation_limit_bytes.or(s.v8_heap_limit_bytes)) {
            (Some(h), Some(l)) => format!(" | js heap floor {} of {}", b(h), b(l)),
            (Some(h), None) => format!(" | js heap floor {}", b(h)),
            (None, Some(l)) => format!(" | js heap limit {}", b(l)),
            (None, None) => String::new(),
        };
    let v = &s.verdict;
    let slope = match (v.state, v.slope_bytes_per_s) {
        (VerdictState::Growing | VerdictState::Leak | VerdictState::GcThrashing, Some(r)) => {
            format!(" {}/min", fmt_delta((r * 60.0) as i64))
        }
        _ => String::new(),
    };
    let forecast = match (v.time_to_limit_s, v.limit) {
        (Some(t), Some(limit)) => format!(" | {} limit in {}", limit.name(), fmt_duration(t)),
        _ => String::new(),
    };
    writeln!(
        o,
        "{} {:>7} {:<12} {:<18} rss {:>10} ({}){heap} | native {}{forecast}",
        clock(s.ts),
        s.pid,
        s.comm,
        format!("{}{slope}", verdict_label(v)),
        b(s.rss_bytes),
        fmt_delta(s.rss_growth_bytes),
        b(s.native_bytes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::{GroupSnapshot, SCHEMA_VERSION, Started};

    fn snap(pid: u32) -> Snapshot {
        Snapshot { cgroup_id: 9, ..Snapshot::blank(pid, "node") }
    }

    #[test]
    fn a_large_group_shows_its_top_processes_and_a_count_of_the_rest() {
        let mut out = Vec::new();
        let mut sink = TextSink::new(&mut out, false);
        let start = Started {
            ts: 0.0,
            schema_version: SCHEMA_VERSION,
            selection: "--comm node".into(),
            follows_new_processes: true,
            processes: 7,
            mem_hook: crate::core::MemHook::BtfTracepoint,
        };
        sink.record(&Record::Start(start)).unwrap();
        let group = GroupSnapshot {
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
            memory_source: Some(crate::core::input::CgroupVersion::V2),
            gc_count: 0,
            gc_pause_ns: 0,
            verdict: crate::core::record::Verdict::unknown(""),
        };
        sink.record(&Record::Group(group)).unwrap();
        for pid in 1..=7 {
            sink.record(&Record::Snapshot(snap(pid))).unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("tracing 7 processes (--comm node), and matching processes as they start"));
        assert!(lines[1].contains("== cgroup /system.slice/api.service: unknown, 7 traced"), "{}", lines[1]);
        assert!(lines[1].contains("cgroup 100.0 MiB of 256.0 MiB (156.0 MiB headroom"), "{}", lines[1]);
        assert_eq!(lines.len(), 2 + SHOWN_PER_GROUP + 1, "{text}");
        assert!(lines.last().unwrap().ends_with("... and 2 more processes"));
    }

    /// A process's summary lists its sites by live bytes, then the most
    /// allocating ones not listed yet.
    #[test]
    fn the_summary_lists_allocation_sites() {
        use crate::core::{
            Event, EventKind, Input, MemHook, MemOp, Model, ModelConfig, ProcessInfo, Record,
            sites::{Frame, FrameKind},
        };
        const M: u64 = 1 << 20;
        let mut m = Model::new(ModelConfig {
            page_size: 4096,
            large_threshold: M,
            wall_offset_ns: 0,
            mem_hook: MemHook::BtfTracepoint,
            group_all: false,
        });
        let info = ProcessInfo { pid: 7, comm: "node".into(), ts_ns: 1, ..Default::default() };
        m.apply(Input::Attach(Box::new(info)), &mut Vec::new());
        let js = |name: &str, line| Frame {
            function: name.into(),
            file: Some("/srv/app.js".into()),
            line: Some(line),
            kind: FrameKind::Js,
            build_id: None,
        };
        let stacks = [(1, vec![js("keep", 3), js("route", 9)]), (2, vec![js("churn", 5)])];
        for (id, frames) in stacks {
            m.apply(Input::Stack { pid: 7, id, frames }, &mut Vec::new());
        }
        let mut mem = |ts_ns, op, stack| {
            let kind = EventKind::Mem { op, stack: Some(stack) };
            m.apply(Input::Event(Event { pid: 7, tid: 7, ts_ns, cgroup_id: 0, kind }), &mut Vec::new());
        };
        for i in 0..6u64 {
            let addr = 0x1000_0000 + i * 0x100_0000;
            mem(10 + i, MemOp::Mmap { addr, len: 2 * M, prot: 3, flags: 0x22, fd: -1 }, 1);
        }
        for i in 0..20u64 {
            let addr = 0x9000_0000 + i * 0x100_0000;
            mem(20 + i, MemOp::Mmap { addr, len: 2 * M, prot: 3, flags: 0x22, fd: -1 }, 2);
            mem(21 + i, MemOp::Munmap { addr, len: 2 * M }, 2);
        }
        let Record::Summary(summary) = m.summary(100) else { panic!() };
        let mut out = Vec::new();
        summary::summary(&mut out, &summary).unwrap();
        let text = String::from_utf8(out).unwrap();
        let at = text.find("allocation sites (live / allocated, calls):").expect(&text);
        let lines: Vec<&str> = text[at..].lines().take(5).collect();
        assert!(
            lines[1].ends_with("12.0 MiB /   12.0 MiB      6x  keep (app.js:3) \u{2190} route (app.js:9)"),
            "{text}"
        );
        assert!(lines[2].ends_with("0 B /   40.0 MiB     20x  churn (app.js:5)"), "{text}");
    }
}
