//! Human-readable output: one line per process per interval, a line per
//! notable event, and a summary block at the end.

use std::io::{self, Write};

use super::Sink;
use crate::{
    core::{
        Record,
        record::{ProcessSummary, Snapshot, Summary},
    },
    units::{fmt_bytes, fmt_delta, fmt_size_class},
};

pub struct TextSink<W: Write> {
    out: W,
}

impl<W: Write> TextSink<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }
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
            Record::Snapshot(s) => snapshot_line(o, s)?,
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
                "{} {:>7} {} chosen by the OOM killer: anon rss {}, file rss {}, shmem rss {}, vm {}",
                clock(k.ts),
                k.pid,
                k.comm,
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
    for p in &s.processes {
        process_summary(o, p)?;
    }
    Ok(())
}

fn process_summary(o: &mut impl Write, p: &ProcessSummary) -> io::Result<()> {
    let state = match (p.exited, p.oom_killed) {
        (_, true) => ", OOM-killed",
        (true, false) => ", exited",
        _ => "",
    };
    let container = p.container.as_ref().map_or(String::new(), |c| {
        let runtime = serde_json::to_value(c.runtime)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let pod = c.pod_uid.as_ref().map_or(String::new(), |uid| format!(", pod {uid}"));
        format!(", container {} ({runtime}{pod})", &c.container_id[..12])
    });
    writeln!(o, "pid {} ({}){container}, traced {:.1} s{state}", p.pid, p.comm, p.traced_s)?;
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
        for (kind, q) in [("minor", &gc.minor), ("major", &gc.major)] {
            if q.count > 0 {
                writeln!(
                    o,
                    "    {kind:<5} {:>6} pauses, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                    q.count, q.p50_ms, q.p90_ms, q.p99_ms, q.max_ms
                )?;
            }
        }
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
