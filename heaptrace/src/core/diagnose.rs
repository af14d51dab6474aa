//! Diagnosis inside the model: feeds each process's verdict evidence and
//! flight recorder from its GCs and samples, judges processes and groups,
//! and makes a `verdict` record whenever a verdict changes.

use super::{
    container::ContainerRef,
    gc::GcKind,
    group::Group,
    input::GcPause,
    process::ProcessState,
    record::{LargeMapping, MappingOp, MappingsSummary, Record, VerdictChange},
    recorder::{GcEntry, MemoryPoint, VerdictEntry},
    report::native_bytes,
    verdict::{self, Limits, MemoryKind, Verdict, VerdictState},
};
use crate::units::{fmt_bytes, fmt_duration};

/// Seconds on the evidence's clock (CLOCK_MONOTONIC).
fn secs(ts_ns: u64) -> f64 {
    ts_ns as f64 / 1e9
}

/// A GC of `p`: the flight recorder keeps every isolate's; the verdict's
/// floor is the main isolate's (the thread whose id is the pid; workers
/// have heaps and limits of their own).
pub fn gc(
    p: &mut ProcessState,
    tid: u32,
    ts_ns: u64,
    ts: f64,
    pause: &GcPause,
    collector: &'static str,
    reason: &'static str,
) {
    p.diagnosis.recorder.gc(GcEntry {
        ts,
        tid,
        collector,
        reason,
        pause_ms: pause.pause_ns as f64 / 1e6,
        heap_before_bytes: pause.heap_before,
        heap_after_bytes: pause.heap_after,
    });
    if tid == p.pid {
        let major = GcKind::of(pause.collector) == GcKind::Major;
        p.diagnosis.evidence.gc(
            secs(ts_ns),
            pause.pause_ns as f64 / 1e9,
            major,
            pause.heap_before,
            pause.heap_after,
        );
    }
}

/// A large mapping of `p`: kept by the recorder and tallied for the
/// interval's `mappings` record.
pub fn large_mapping(p: &mut ProcessState, m: &LargeMapping) {
    p.diagnosis.recorder.mapping(m.clone());
    let t = &mut p.diagnosis.interval_mappings;
    if m.op == MappingOp::Munmap {
        t.unmapped += 1;
        t.unmapped_bytes += m.len;
    } else {
        t.mapped += 1;
        t.mapped_bytes += m.len;
        if let Some((_, n)) = t.lens.iter_mut().find(|(len, _)| *len == m.len) {
            *n += 1;
        } else if t.lens.len() < 8 {
            t.lens.push((m.len, 1));
        }
    }
}

/// The interval's large mappings of `p` as one record (None if there were
/// none), and a fresh tally.
pub fn take_mappings(p: &mut ProcessState, ts: f64) -> Option<Record> {
    let t = std::mem::take(&mut p.diagnosis.interval_mappings);
    if t.mapped + t.unmapped == 0 {
        return None;
    }
    let typical_len = t.lens.iter().max_by_key(|(len, n)| (*n, *len)).map_or(0, |(len, _)| *len);
    Some(Record::Mappings(MappingsSummary {
        ts,
        pid: p.pid,
        mapped: t.mapped,
        mapped_bytes: t.mapped_bytes,
        unmapped: t.unmapped,
        unmapped_bytes: t.unmapped_bytes,
        typical_len,
        cgroup_id: p.cgroup_id,
    }))
}

/// Large mappings of one interval (see [`MappingsSummary`]).
#[derive(Clone, Debug, Default)]
pub struct MappingTally {
    mapped: u64,
    mapped_bytes: u64,
    unmapped: u64,
    unmapped_bytes: u64,
    /// Lengths seen and how often (the first eight distinct ones).
    lens: Vec<(u64, u64)>,
}

/// A sample of `p` was applied: record it, judge again, and say so if the
/// verdict changed.
pub fn sampled(p: &mut ProcessState, group: Option<&Group>, ts_ns: u64, ts: f64, out: &mut Vec<Record>) {
    let native = native_bytes(p);
    p.diagnosis.native_bytes = native;
    p.diagnosis.evidence.sample(secs(ts_ns), native, p.status.rss_anon);
    p.diagnosis.recorder.memory(MemoryPoint {
        ts,
        rss_anon_bytes: p.status.rss_anon,
        rss_file_bytes: p.status.rss_file,
        rss_shmem_bytes: p.status.rss_shmem,
        committed_bytes: p.space.totals().committed,
        native_bytes: native,
        js_heap_bytes: p.gc.heap_last,
    });
    let cgroup = group.and_then(|g| g.memory.as_ref()).and_then(|m| Some((m.usage_bytes, m.limit_bytes?)));
    // The floor runs out at the old generation's limit; the rest of
    // heap_size_limit is the young generation's reserve.
    let limits = Limits { v8_heap: p.v8_old_generation_limit.or(p.v8_heap_limit), cgroup };
    let mut verdict =
        verdict::judge(&p.diagnosis.evidence, secs(ts_ns), limits, &p.diagnosis.verdict, p.gc_probed);
    name_the_site(p, ts_ns, &mut verdict);
    if changed(&p.diagnosis.verdict, &verdict) {
        p.diagnosis.recorder.verdict(VerdictEntry {
            ts,
            state: verdict.state,
            memory: verdict.memory,
            slope_bytes_per_s: verdict.slope_bytes_per_s,
        });
        out.push(Record::Verdict(VerdictChange {
            ts,
            pid: Some(p.pid),
            comm: Some(p.comm.clone()),
            cgroup_path: p.group.clone(),
            cgroup_id: p.cgroup_id,
            container: p.container.clone(),
            previous: p.diagnosis.verdict.state,
            verdict: verdict.clone(),
        }));
    }
    p.diagnosis.verdict = verdict;
}

/// How often the sites' growth window moves on: the window is the last one
/// to two of these.
const SITE_WINDOW_NS: u64 = 60_000_000_000;

/// A site must hold at least this share of the growth to be named.
const SITE_SHARE: f64 = 0.5;

/// Adds the allocation site that took most of the growing memory to a
/// growing verdict: "…; 80 % of the growth allocated in handler (app.js:17)".
fn name_the_site(p: &mut ProcessState, ts_ns: u64, verdict: &mut Verdict) {
    if ts_ns.saturating_sub(p.diagnosis.sites_marked_ns) >= SITE_WINDOW_NS {
        p.sites.mark();
        p.diagnosis.sites_marked_ns = ts_ns;
    }
    if !matches!(verdict.state, VerdictState::Leak | VerdictState::Growing) {
        return;
    }
    let Some(memory) = verdict.memory else { return };
    let growth = match memory {
        MemoryKind::JsHeap => p.sites.growth(true),
        MemoryKind::Native => p.sites.growth(false),
        MemoryKind::Both => {
            [p.sites.growth(true), p.sites.growth(false)].into_iter().flatten().max_by_key(|g| g.bytes)
        }
    };
    let Some(g) = growth.filter(|g| g.share >= SITE_SHARE) else { return };
    let Some(i) = g.site.headline_frame() else { return };
    let frame = g.site.frames[i].clone();
    verdict.evidence = format!(
        "{}; {:.0} % of the growth allocated in {}",
        verdict.evidence,
        g.share * 100.0,
        frame.label()
    );
    verdict.site = Some(verdict::VerdictSite { share: g.share, bytes: g.bytes, frame });
}

fn changed(old: &Verdict, new: &Verdict) -> bool {
    old.state != new.state || old.memory != new.memory || old.limit != new.limit
}

/// How bad a state is, for a group's verdict: its worst member's.
fn severity(s: VerdictState) -> u8 {
    match s {
        VerdictState::Unknown => 0,
        VerdictState::Steady => 1,
        VerdictState::Growing => 2,
        VerdictState::Leak => 3,
        VerdictState::GcThrashing => 4,
    }
}

/// A group's verdict: its worst members' state, their memory and summed
/// slope, and the nearest forecast: a member's own, or the cgroup's usage
/// growing into its limit.
pub fn judge_group(
    g: &mut Group,
    members: &[&ProcessState],
    ts: f64,
    container: Option<&ContainerRef>,
    out: &mut Vec<Record>,
) {
    let worst = members.iter().map(|p| p.diagnosis.verdict.state).max_by_key(|s| severity(*s));
    let v = match worst {
        None | Some(VerdictState::Unknown) => Verdict::unknown(if members.is_empty() {
            "no live process".to_owned()
        } else {
            "not enough evidence yet in any of its processes".to_owned()
        }),
        Some(state) => group_verdict(g, members, state),
    };
    if changed(&g.verdict, &v) {
        out.push(Record::Verdict(VerdictChange {
            ts,
            pid: None,
            comm: None,
            cgroup_path: g.cgroup_path.clone(),
            cgroup_id: g.cgroup_id,
            container: container.cloned(),
            previous: g.verdict.state,
            verdict: v.clone(),
        }));
    }
    g.verdict = v;
}

fn group_verdict(g: &Group, members: &[&ProcessState], state: VerdictState) -> Verdict {
    let worst: Vec<&&ProcessState> = members.iter().filter(|p| p.diagnosis.verdict.state == state).collect();
    let memory = worst
        .iter()
        .filter_map(|p| p.diagnosis.verdict.memory)
        .reduce(|a, b| if a == b { a } else { MemoryKind::Both });
    let slope: Option<f64> =
        worst.iter().filter_map(|p| p.diagnosis.verdict.slope_bytes_per_s).reduce(|a, b| a + b);
    let mut v = Verdict {
        state,
        memory,
        slope_bytes_per_s: slope,
        basis: worst.iter().filter_map(|p| p.diagnosis.verdict.basis).min_by(|a, b| a.fit.total_cmp(&b.fit)),
        time_to_limit_s: None,
        limit: None,
        limit_bytes: None,
        evidence: String::new(),
        site: None,
    };
    // The nearest of the members' forecasts and the cgroup's own.
    let mut nearest = members
        .iter()
        .filter_map(|p| {
            Some((
                p.diagnosis.verdict.time_to_limit_s?,
                p.diagnosis.verdict.limit?,
                p.diagnosis.verdict.limit_bytes?,
            ))
        })
        .min_by(|a, b| a.0.total_cmp(&b.0));
    if matches!(state, VerdictState::Leak | VerdictState::Growing)
        && let Some((t, limit)) = g.cgroup_forecast()
        && nearest.is_none_or(|n| t < n.0)
    {
        nearest = Some((t, verdict::LimitKind::Cgroup, limit));
    }
    if let Some((t, kind, bytes)) = nearest {
        (v.time_to_limit_s, v.limit, v.limit_bytes) = (Some(t), Some(kind), Some(bytes));
    }
    let names: Vec<String> = worst.iter().take(3).map(|p| format!("pid {} ({})", p.pid, p.comm)).collect();
    let forecast = match (v.time_to_limit_s, v.limit, v.limit_bytes) {
        (Some(t), Some(kind), Some(bytes)) => format!(
            "; {} ({}) in {}",
            match kind {
                verdict::LimitKind::V8Heap => "V8's heap limit",
                verdict::LimitKind::Cgroup => "the cgroup's memory limit",
            },
            fmt_bytes(bytes as f64),
            fmt_duration(t)
        ),
        _ => String::new(),
    };
    v.evidence = format!(
        "{} in {} of {} processes: {}{}",
        state.name(),
        worst.len(),
        members.len(),
        names.join(", "),
        forecast
    );
    v
}
