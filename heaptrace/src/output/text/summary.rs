//! The summary block at the end of a text run: per group, then per
//! process, with the finding first.

use std::io::{self, Write};

use super::{SHOWN_PER_GROUP, b, container_label, group_label};

/// Processes whose answer leads the summary (the worst first).
const ANSWERS_SHOWN: usize = 10;
use crate::{
    core::{
        gc::PauseQuantiles,
        input::CgroupVersion,
        record::{GcSummary, GroupSummary, ProcessSummary, Summary, VerdictState},
        sites::AllocationSite,
    },
    units::{fmt_delta, fmt_size_class},
};

pub(super) fn summary(o: &mut impl Write, s: &Summary) -> io::Result<()> {
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
    answers(o, s)?;
    if s.groups.is_empty() {
        for p in &s.processes {
            process_summary(o, p)?;
        }
        return Ok(());
    }
    let mut listed = vec![false; s.processes.len()];
    for group in &s.groups {
        group_summary(o, group, &s.processes, &mut listed)?;
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

/// The answer first: one paragraph per process, the worst first, and each
/// group's verdict; the figures follow.
fn answers(o: &mut impl Write, s: &Summary) -> io::Result<()> {
    let rank = |p: &ProcessSummary| match (p.death.is_some(), p.verdict.state) {
        (true, _) => 0,
        (_, VerdictState::GcThrashing) => 1,
        (_, VerdictState::Leak) => 2,
        (_, VerdictState::Growing) => 3,
        (_, VerdictState::Steady) => 4,
        (_, VerdictState::Unknown) => 5,
    };
    let mut order: Vec<&ProcessSummary> = s.processes.iter().filter(|p| !p.replaced_by_exec).collect();
    order.sort_by_key(|p| (rank(p), std::cmp::Reverse(p.rss_growth_bytes)));
    writeln!(o, "What happened:")?;
    for p in order.iter().take(ANSWERS_SHOWN) {
        writeln!(o, "  * {}", p.answer)?;
    }
    if order.len() > ANSWERS_SHOWN {
        writeln!(o, "  ... and {} more processes (-o json has every answer)", order.len() - ANSWERS_SHOWN)?;
    }
    for g in &s.groups {
        let v = &g.snapshot.verdict;
        if v.state != VerdictState::Unknown {
            writeln!(
                o,
                "  * {}: {}",
                group_label(g.snapshot.container.as_ref(), &g.snapshot.cgroup_path),
                v.evidence
            )?;
        }
    }
    Ok(())
}

/// One group: the cgroup's memory, its processes, its pauses, and its
/// fastest-growing processes (marked in `listed`).
fn group_summary(
    o: &mut impl Write,
    group: &GroupSummary,
    processes: &[ProcessSummary],
    listed: &mut [bool],
) -> io::Result<()> {
    let g = &group.snapshot;
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
            match g.memory_source {
                Some(CgroupVersion::V2) => "v2",
                Some(CgroupVersion::V1) => "v1",
                None => "",
            }
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
        pause_quantiles(o, "  gc ", &group.minor, &group.major)?;
    }
    let mut members: Vec<usize> = (0..processes.len())
        .filter(|&i| !listed[i] && g.cgroup_id != 0 && processes[i].cgroup_id == g.cgroup_id)
        .collect();
    members.sort_by_key(|&i| std::cmp::Reverse(processes[i].rss_growth_bytes));
    for (n, &i) in members.iter().enumerate() {
        listed[i] = true;
        if n < SHOWN_PER_GROUP {
            process_summary(o, &processes[i])?;
        }
    }
    if members.len() > SHOWN_PER_GROUP {
        let more = members.len() - SHOWN_PER_GROUP;
        writeln!(o, "  ... and {more} more processes (-o json lists them all)")?;
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
    let died = p.death.map(|d| format!(", died ({})", d.name()));
    let state = match (p.exited, p.oom_killed) {
        (_, true) => ", OOM-killed",
        (true, false) => ", exited",
        _ => "",
    };
    let state =
        if p.replaced_by_exec { ", exec'd another program" } else { died.as_deref().unwrap_or(state) };
    let container =
        p.container.as_ref().map_or(String::new(), |c| format!(", container {}", container_label(c)));
    let ns_pid = match p.ns_pid {
        Some(ns) if ns != p.pid => format!(" (pid {ns} in its namespace)"),
        _ => String::new(),
    };
    writeln!(o, "pid {}{ns_pid} ({}){container}, traced {:.1} s{state}", p.pid, p.comm, p.traced_s)?;
    writeln!(o, "  verdict:   {}", p.verdict.evidence)?;
    if let Some(limit) = p.v8_heap_limit_bytes {
        let old = p
            .v8_old_generation_limit_bytes
            .map_or(String::new(), |o| format!(", of which the old generation {}", b(o)));
        writeln!(o, "  v8 heap:   limit {}{old} (read from the process)", b(limit))?;
    }
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
        gc_summary(o, gc)?;
    }
    allocation_sites(o, p)?;
    chunks_and_largest(o, p)
}

/// Top allocation sites shown per process; JSON has them all.
const SITES_SHOWN: usize = 5;

/// The top sites, most live bytes first, then those among the most
/// allocating that are not listed yet (churn: allocated a lot, live
/// little): one line each, named by its first application JS frame and
/// that frame's caller.
fn allocation_sites(o: &mut impl Write, p: &ProcessSummary) -> io::Result<()> {
    if p.allocation_sites.is_empty() {
        return Ok(());
    }
    let all = p.allocation_sites.len();
    let more = if all > SITES_SHOWN { format!("; -o json lists all {all}") } else { String::new() };
    writeln!(o, "  allocation sites (live / allocated, calls{more}):")?;
    let by_live = &p.allocation_sites[..all.min(SITES_SHOWN)];
    for site in by_live {
        site_line(o, site)?;
    }
    let mut by_allocated: Vec<&AllocationSite> = p.allocation_sites.iter().collect();
    by_allocated.sort_by_key(|s| std::cmp::Reverse(s.bytes));
    let churn: Vec<&AllocationSite> =
        by_allocated.into_iter().take(SITES_SHOWN).filter(|s| !by_live.contains(s)).collect();
    if !churn.is_empty() {
        writeln!(o, "  and among the most allocating:")?;
        for site in churn {
            site_line(o, site)?;
        }
    }
    if p.unnamed_stack_calls > 0 {
        writeln!(
            o,
            "    ({} allocating calls whose stack was lost before it was read)",
            p.unnamed_stack_calls
        )?;
    }
    Ok(())
}

fn site_line(o: &mut impl Write, site: &AllocationSite) -> io::Result<()> {
    writeln!(
        o,
        "    {:>10} / {:>10} {:>6}x  {}",
        b(site.live_bytes),
        b(site.bytes),
        site.count,
        site.headline_with_caller()
    )
}

fn gc_summary(o: &mut impl Write, gc: &GcSummary) -> io::Result<()> {
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
    pause_quantiles(o, "    ", &gc.minor, &gc.major)
}

/// Growth by chunk size (what tells V8 pages from large objects), and the
/// largest live mappings.
fn chunks_and_largest(o: &mut impl Write, p: &ProcessSummary) -> io::Result<()> {
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
                m.backing.name(),
                if m.shared { " shared" } else { "" },
                b(m.committed_bytes)
            )?;
        }
    }
    Ok(())
}
