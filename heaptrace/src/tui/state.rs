//! What the live view knows, built record by record ([`ViewState::apply`]).
//! Pure and bounded: per process a ring of the last ten minutes of
//! snapshots, the last GCs and a pause histogram; exited processes beyond
//! a few are let go. The same state serves a live run (records as the
//! collector emits them) and a recording browsed in time (records up to a
//! cursor, see [`super::timeline`]).

use std::collections::{BTreeMap, VecDeque};

use hdrhistogram::Histogram;

use crate::{
    core::{
        Record,
        record::{Gc, GroupSnapshot, LargeMapping, MappingOp, MappingsSummary, Snapshot, Verdict},
    },
    output::CollectorStats,
};

/// How far back the memory chart goes.
pub const WINDOW_S: f64 = 600.0;
/// Snapshot points kept per process (ten minutes at the default 1 s
/// interval; a shorter interval keeps a shorter window).
pub const MAX_POINTS: usize = 1200;
/// GCs listed per process, and heap points (before/after each GC) charted.
pub const GCS_KEPT: usize = 50;
pub const HEAP_POINTS: usize = 1200;
/// Exited processes still shown; older ones are let go.
pub const EXITED_KEPT: usize = 32;
/// Large mappings listed per process.
pub const MAPPINGS_KEPT: usize = 8;
/// The window over which the GC share (pause time over wall time) is taken.
pub const GC_SHARE_WINDOW_S: f64 = 60.0;

/// One reading of a process (or a group) at a snapshot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub ts: f64,
    pub rss: u64,
    /// A process's committed mapped memory; a group's cgroup usage.
    pub committed: u64,
    pub native: u64,
    pub heap_after_major: Option<u64>,
    /// Total GC pause since attach, ns.
    pub gc_pause_ns: u64,
}

/// The JS heap around one GC.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeapPoint {
    pub ts: f64,
    pub before: u64,
    pub after: u64,
    pub major: bool,
}

/// One GC, as `--trace-gc` words it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GcLine {
    pub ts: f64,
    pub tid: u32,
    pub collector: &'static str,
    pub reason: &'static str,
    pub pause_ns: u64,
    pub before: u64,
    pub after: u64,
    pub marking_steps: u32,
    pub marking_step_ns: u64,
}

/// A large mapping: live (seen mapped and not unmapped) or, after the
/// summary, among the largest the process held.
#[derive(Clone, Debug, PartialEq)]
pub struct MappingLine {
    pub addr: u64,
    pub len: u64,
    pub committed: Option<u64>,
    /// `rw-p anon`, `anon shared`, and the site when known.
    pub what: String,
}

/// An allocation site: its headline frame and its bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteLine {
    pub headline: String,
    pub live_bytes: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug)]
pub struct ProcessView {
    pub pid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    pub gc_probes: bool,
    pub points: VecDeque<Point>,
    pub heap: VecDeque<HeapPoint>,
    pub gcs: VecDeque<GcLine>,
    /// Pause lengths, µs.
    pub pauses: Histogram<u64>,
    pub last: Option<Point>,
    pub rss_growth_per_s: f64,
    pub native_start: Option<u64>,
    pub v8_heap_limit: Option<u64>,
    pub gc_count: u64,
    pub verdict: Option<Verdict>,
    /// How it ended, and when.
    pub ended: Option<(f64, String)>,
    pub mappings: Vec<MappingLine>,
    pub last_mappings: Option<MappingsSummary>,
    /// From the summary or its death record (most live bytes first).
    pub sites: Vec<SiteLine>,
    /// The answer in words, from the summary or the death record.
    pub answer: Option<String>,
    /// `--on-leak` heap reports received.
    pub heap_reports: u32,
}

impl ProcessView {
    fn new(pid: u32, comm: &str, cgroup_id: u64) -> Self {
        Self {
            pid,
            comm: comm.to_owned(),
            cgroup_id,
            gc_probes: false,
            points: VecDeque::new(),
            heap: VecDeque::new(),
            gcs: VecDeque::new(),
            pauses: pause_histogram(),
            last: None,
            rss_growth_per_s: 0.0,
            native_start: None,
            v8_heap_limit: None,
            gc_count: 0,
            verdict: None,
            ended: None,
            mappings: Vec::new(),
            last_mappings: None,
            sites: Vec::new(),
            answer: None,
            heap_reports: 0,
        }
    }

    /// Native memory now minus at the first snapshot.
    pub fn native_growth(&self) -> Option<i64> {
        Some(self.last?.native as i64 - self.native_start? as i64)
    }

    /// Pause time over wall time, over the last minute of snapshots.
    pub fn gc_share(&self) -> Option<f64> {
        gc_share(&self.points)
    }

    pub fn pause_p99_ms(&self) -> Option<f64> {
        (!self.pauses.is_empty()).then(|| self.pauses.value_at_quantile(0.99) as f64 / 1e3)
    }
}

#[derive(Clone, Debug)]
pub struct GroupView {
    pub cgroup_path: String,
    pub cgroup_id: u64,
    pub label: String,
    pub processes: usize,
    pub points: VecDeque<Point>,
    pub last: Option<Point>,
    pub rss_growth: i64,
    pub first_ts: f64,
    pub memory_limit: Option<u64>,
    pub gc_count: u64,
    pub verdict: Option<Verdict>,
}

impl GroupView {
    pub fn gc_share(&self) -> Option<f64> {
        gc_share(&self.points)
    }
}

/// How tracing was set up (the `start` record).
#[derive(Clone, Debug, PartialEq)]
pub struct StartInfo {
    pub ts: f64,
    pub selection: String,
    pub processes: usize,
    pub follows: bool,
    pub mem_hook: String,
}

/// The collector's own figures, from `Sink::tick`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LiveStats {
    pub events: u64,
    pub dropped: u64,
    pub events_per_s: f64,
    pub probe_attach_failures: u64,
    last: Option<(u64, u64)>,
}

#[derive(Clone, Debug, Default)]
pub struct ViewState {
    pub started: Option<StartInfo>,
    pub processes: BTreeMap<u32, ProcessView>,
    pub groups: BTreeMap<String, GroupView>,
    /// The first and latest record times (Unix seconds).
    pub first_ts: Option<f64>,
    pub last_ts: f64,
    /// Events lost since start, from `dropped` records.
    pub dropped_total: u64,
    /// The summary came: tracing is over.
    pub finished: bool,
    pub stats: LiveStats,
}

/// A row of the table: a group or a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RowKey {
    Group(u64),
    Process(u32),
}

/// A row's figures, as the table shows and sorts them.
#[derive(Clone, Debug, PartialEq)]
pub struct Row<'a> {
    pub key: RowKey,
    /// `pid comm`, or the group's label.
    pub pid: Option<u32>,
    pub name: &'a str,
    pub rss: u64,
    pub growth_per_s: f64,
    pub heap_after_major: Option<u64>,
    pub native_growth: Option<i64>,
    pub gc_share: Option<f64>,
    pub p99_ms: Option<f64>,
    pub verdict: Option<&'a Verdict>,
    pub time_to_limit_s: Option<f64>,
    pub ended: bool,
}

fn pause_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 2).expect("static histogram bounds are valid")
}

fn gc_share(points: &VecDeque<Point>) -> Option<f64> {
    let last = points.back()?;
    let first = points.iter().find(|p| p.ts >= last.ts - GC_SHARE_WINDOW_S)?;
    let wall = last.ts - first.ts;
    (wall > 0.0).then(|| last.gc_pause_ns.saturating_sub(first.gc_pause_ns) as f64 / 1e9 / wall)
}

/// Keeps a ring to its window and size.
fn push_point(points: &mut VecDeque<Point>, p: Point) {
    while points.front().is_some_and(|f| f.ts < p.ts - WINDOW_S) || points.len() >= MAX_POINTS {
        points.pop_front();
    }
    points.push_back(p);
}

/// When a record happened (Unix seconds); `heap` reports carry no time.
pub fn record_ts(r: &Record) -> Option<f64> {
    Some(match r {
        Record::Start(s) => s.ts,
        Record::Snapshot(s) => s.ts,
        Record::Mapping(m) => m.ts,
        Record::Exit(e) => e.ts,
        Record::Oom(o) => o.ts,
        Record::Gc(g) => g.ts,
        Record::Dropped(d) => d.ts,
        Record::Attach(a) => a.ts,
        Record::Group(g) => g.ts,
        Record::Verdict(v) => v.ts,
        Record::Death(d) => d.ts,
        Record::Mappings(m) => m.ts,
        Record::Summary(s) => s.ts,
        Record::Heap(_) => return None,
    })
}

impl ViewState {
    pub fn apply(&mut self, record: &Record) {
        if let Some(ts) = record_ts(record) {
            self.first_ts.get_or_insert(ts);
            self.last_ts = self.last_ts.max(ts);
        }
        match record {
            Record::Start(s) => {
                self.started = Some(StartInfo {
                    ts: s.ts,
                    selection: s.selection.clone(),
                    processes: s.processes,
                    follows: s.follows_new_processes,
                    mem_hook: s.mem_hook.to_string(),
                })
            }
            Record::Attach(a) => {
                let p = self.process(a.pid, &a.comm, a.cgroup_id);
                if p.ended.is_some() {
                    // The pid was reused.
                    *p = ProcessView::new(a.pid, &a.comm, a.cgroup_id);
                }
                p.gc_probes = a.gc_probes;
            }
            Record::Snapshot(s) => self.snapshot(s),
            Record::Group(g) => self.group(g),
            Record::Gc(g) => self.gc(g),
            Record::Verdict(v) => {
                let slot = match v.pid {
                    Some(pid) => self.processes.get_mut(&pid).map(|p| &mut p.verdict),
                    None => self.groups.get_mut(v.cgroup_path.as_str()).map(|g| &mut g.verdict),
                };
                if let Some(slot) = slot {
                    *slot = Some(v.verdict.clone());
                }
            }
            Record::Death(d) => {
                let p = self.process(d.pid, &d.comm, d.cgroup_id);
                let how = match &d.signal {
                    Some(sig) => format!("died ({}, {sig})", d.cause.name()),
                    None => format!("died ({})", d.cause.name()),
                };
                p.ended = Some((d.ts, how));
                p.answer = Some(d.explanation.clone());
                if let Some(v) = &d.verdict {
                    p.verdict = Some(v.clone());
                }
                if !d.allocation_sites.is_empty() {
                    p.sites = sites(&d.allocation_sites);
                }
                self.let_go_of_exited();
            }
            Record::Exit(e) => {
                if let Some(p) = self.processes.get_mut(&e.pid)
                    && p.ended.is_none()
                {
                    let how = if e.oom_killed { "OOM-killed" } else { "exited" };
                    p.ended = Some((e.ts, how.to_owned()));
                }
                self.let_go_of_exited();
            }
            Record::Oom(_) => {}
            Record::Dropped(d) => self.dropped_total = d.total,
            Record::Mapping(m) => self.mapping(m),
            Record::Mappings(m) => {
                if let Some(p) = self.processes.get_mut(&m.pid) {
                    p.last_mappings = Some(m.clone());
                }
            }
            Record::Heap(h) => {
                if let Some(p) = self.processes.get_mut(&h.pid) {
                    p.heap_reports += 1;
                }
            }
            Record::Summary(s) => {
                self.finished = true;
                for ps in &s.processes {
                    let p = self.process(ps.pid, &ps.comm, ps.cgroup_id);
                    p.verdict = Some(ps.verdict.clone());
                    p.sites = sites(&ps.allocation_sites);
                    p.answer = Some(ps.answer.clone());
                    if !ps.largest_mappings.is_empty() {
                        p.mappings = ps
                            .largest_mappings
                            .iter()
                            .take(MAPPINGS_KEPT)
                            .map(|m| MappingLine {
                                addr: m.addr,
                                len: m.len,
                                committed: Some(m.committed_bytes),
                                what: format!(
                                    "{}{}",
                                    m.backing.name(),
                                    if m.shared { " shared" } else { "" }
                                ),
                            })
                            .collect();
                    }
                    if ps.exited && p.ended.is_none() {
                        p.ended = Some((s.ts, "exited".to_owned()));
                    }
                }
                for gs in &s.groups {
                    self.group(&gs.snapshot);
                }
            }
        }
    }

    /// The collector's figures at the end of an interval: events per second
    /// between two of them.
    pub fn apply_stats(&mut self, s: &CollectorStats) {
        let st = &mut self.stats;
        if let Some((ns, events)) = st.last
            && s.now_ns > ns
        {
            st.events_per_s = s.events.saturating_sub(events) as f64 * 1e9 / (s.now_ns - ns) as f64;
        }
        st.last = Some((s.now_ns, s.events));
        st.events = s.events;
        st.dropped = s.dropped;
        st.probe_attach_failures = s.probe_attach_failures;
    }

    fn process(&mut self, pid: u32, comm: &str, cgroup_id: u64) -> &mut ProcessView {
        self.processes.entry(pid).or_insert_with(|| ProcessView::new(pid, comm, cgroup_id))
    }

    fn snapshot(&mut self, s: &Snapshot) {
        let p = self.process(s.pid, &s.comm, s.cgroup_id);
        let point = Point {
            ts: s.ts,
            rss: s.rss_bytes,
            committed: s.committed_bytes,
            native: s.native_bytes,
            heap_after_major: s.heap_after_last_major_bytes,
            gc_pause_ns: s.gc_pause_ns,
        };
        push_point(&mut p.points, point);
        p.last = Some(point);
        p.native_start.get_or_insert(s.native_bytes);
        p.cgroup_id = s.cgroup_id;
        p.rss_growth_per_s = s.rss_growth_bytes_per_s;
        p.v8_heap_limit = s.v8_heap_limit_bytes;
        p.gc_count = s.gc_count;
        // Compared first: a verdict holds a sentence, cloned only when it
        // changed.
        if p.verdict.as_ref() != Some(&s.verdict) {
            p.verdict = Some(s.verdict.clone());
        }
    }

    fn group(&mut self, g: &GroupSnapshot) {
        if !self.groups.contains_key(g.cgroup_path.as_str()) {
            let view = GroupView {
                cgroup_path: g.cgroup_path.clone(),
                cgroup_id: g.cgroup_id,
                label: crate::output::group_label(g.container.as_ref(), &g.cgroup_path),
                processes: 0,
                points: VecDeque::new(),
                last: None,
                rss_growth: 0,
                first_ts: g.ts,
                memory_limit: None,
                gc_count: 0,
                verdict: None,
            };
            self.groups.insert(g.cgroup_path.clone(), view);
        }
        let Some(view) = self.groups.get_mut(g.cgroup_path.as_str()) else { return };
        let point = Point {
            ts: g.ts,
            rss: g.rss_bytes,
            committed: g.memory_usage_bytes.unwrap_or(0),
            native: 0,
            heap_after_major: None,
            gc_pause_ns: g.gc_pause_ns,
        };
        if view.last.is_none_or(|l| l.ts < g.ts) {
            push_point(&mut view.points, point);
        }
        view.last = Some(point);
        view.processes = g.processes;
        view.rss_growth = g.rss_growth_bytes;
        view.memory_limit = g.memory_limit_bytes;
        view.gc_count = g.gc_count;
        if view.verdict.as_ref() != Some(&g.verdict) {
            view.verdict = Some(g.verdict.clone());
        }
    }

    fn gc(&mut self, g: &Gc) {
        let Some(p) = self.processes.get_mut(&g.pid) else { return };
        if p.gcs.len() >= GCS_KEPT {
            p.gcs.pop_front();
        }
        p.gcs.push_back(GcLine {
            ts: g.ts,
            tid: g.tid,
            collector: g.collector,
            reason: g.reason,
            pause_ns: g.pause_ns,
            before: g.heap_before_bytes,
            after: g.heap_after_bytes,
            marking_steps: g.marking_steps,
            marking_step_ns: g.marking_step_ns,
        });
        while p.heap.front().is_some_and(|f| f.ts < g.ts - WINDOW_S) || p.heap.len() >= HEAP_POINTS {
            p.heap.pop_front();
        }
        let major = g.kind == crate::core::gc::GcKind::Major;
        p.heap.push_back(HeapPoint {
            ts: g.ts,
            before: g.heap_before_bytes,
            after: g.heap_after_bytes,
            major,
        });
        p.pauses.saturating_record((g.pause_ns / 1_000).max(1));
    }

    fn mapping(&mut self, m: &LargeMapping) {
        let Some(p) = self.processes.get_mut(&m.pid) else { return };
        match m.op {
            MappingOp::Munmap => p.mappings.retain(|l| l.addr != m.addr),
            MappingOp::Mmap | MappingOp::Mremap => {
                p.mappings.retain(|l| l.addr != m.addr);
                let backing = m.backing.map_or("", |b| b.name());
                let what = match &m.site {
                    Some(site) => format!("{} {backing} from {site}", m.prot),
                    None => format!("{} {backing}", m.prot),
                };
                p.mappings.push(MappingLine { addr: m.addr, len: m.len, committed: None, what });
                p.mappings.sort_by_key(|m| std::cmp::Reverse(m.len));
                p.mappings.truncate(MAPPINGS_KEPT);
            }
        }
    }

    /// Bounded under churn: only the latest exited processes stay.
    fn let_go_of_exited(&mut self) {
        let ended = self.processes.values().filter(|p| p.ended.is_some()).count();
        if ended <= EXITED_KEPT {
            return;
        }
        let mut by_end: Vec<(f64, u32)> =
            self.processes.values().filter_map(|p| p.ended.as_ref().map(|(ts, _)| (*ts, p.pid))).collect();
        by_end.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (_, pid) in by_end.iter().take(ended - EXITED_KEPT) {
            self.processes.remove(pid);
        }
    }

    /// Every row, groups first then processes, unsorted and unfiltered.
    pub fn rows<'a>(&'a self, out: &mut Vec<Row<'a>>) {
        out.clear();
        for g in self.groups.values() {
            let last = g.last.unwrap_or(Point {
                ts: 0.0,
                rss: 0,
                committed: 0,
                native: 0,
                heap_after_major: None,
                gc_pause_ns: 0,
            });
            let span = last.ts - g.first_ts;
            out.push(Row {
                key: RowKey::Group(g.cgroup_id),
                pid: None,
                name: &g.label,
                rss: last.rss,
                growth_per_s: if span > 0.0 { g.rss_growth as f64 / span } else { 0.0 },
                heap_after_major: None,
                native_growth: None,
                gc_share: g.gc_share(),
                p99_ms: None,
                verdict: g.verdict.as_ref(),
                time_to_limit_s: g.verdict.as_ref().and_then(|v| v.time_to_limit_s),
                ended: g.processes == 0,
            });
        }
        for p in self.processes.values() {
            out.push(Row {
                key: RowKey::Process(p.pid),
                pid: Some(p.pid),
                name: &p.comm,
                rss: p.last.map_or(0, |l| l.rss),
                growth_per_s: p.rss_growth_per_s,
                heap_after_major: p.last.and_then(|l| l.heap_after_major),
                native_growth: p.native_growth(),
                gc_share: p.gc_share(),
                p99_ms: p.pause_p99_ms(),
                verdict: p.verdict.as_ref(),
                time_to_limit_s: p.verdict.as_ref().and_then(|v| v.time_to_limit_s),
                ended: p.ended.is_some(),
            });
        }
    }

    pub fn group_by_id(&self, id: u64) -> Option<&GroupView> {
        self.groups.values().find(|g| g.cgroup_id == id)
    }
}

fn sites(all: &[crate::core::sites::AllocationSite]) -> Vec<SiteLine> {
    all.iter()
        .take(10)
        .map(|s| SiteLine { headline: s.headline(), live_bytes: s.live_bytes, bytes: s.bytes })
        .collect()
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
