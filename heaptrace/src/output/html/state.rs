//! What the HTML report keeps from the records it sees, bounded: a live run
//! of days must not grow heaptrace's memory. Series halve their resolution
//! past [`MAX_POINTS`]; each process keeps its last [`KEPT_GCS`] GCs one by
//! one and older ones as per-minute aggregates; processes, groups, deaths
//! and verdict changes are capped. Pure: records in, state out, nothing
//! read from the host, so a replayed recording gives the same report.

use std::collections::{BTreeMap, VecDeque};

use crate::core::{
    container::ContainerRef,
    gc::GcKind,
    record::{Death, Gc, GroupSnapshot, ProcessSummary, Snapshot, Started, Summary, Verdict, VerdictChange},
};

/// Points a series keeps before it halves its resolution.
pub const MAX_POINTS: usize = 4000;
/// GCs per process kept one by one (older ones go into minute aggregates).
pub const KEPT_GCS: usize = 2000;
/// Minute aggregates per process: a week.
pub const KEPT_MINUTES: usize = 7 * 24 * 60;
pub const KEPT_VERDICT_CHANGES: usize = 32;
pub const KEPT_DEATHS: usize = 16;
/// Processes and groups in the report; past it, exited ones (then the
/// longest silent) give way.
pub const KEPT_PROCESSES: usize = 64;
pub const KEPT_GROUPS: usize = 32;

/// A point that can stand for two neighbours when a series halves.
pub trait Merge: Copy {
    /// `self` then `later`, as one point.
    fn merge(self, later: Self) -> Self;
}

/// A time series that keeps at most `max` points: when full, neighbours
/// are merged pairwise and from then on every `stride` incoming points make
/// one. The whole run stays covered, at a coarser resolution.
#[derive(Clone, Debug)]
pub struct Downsampled<T> {
    points: Vec<T>,
    /// Incoming points merged so far into the next stored one, and how many.
    pending: Option<(T, usize)>,
    stride: usize,
    max: usize,
}

impl<T: Merge> Downsampled<T> {
    pub fn new(max: usize) -> Self {
        Self { points: Vec::new(), pending: None, stride: 1, max: max.max(2) }
    }

    pub fn push(&mut self, point: T) {
        let (merged, n) = match self.pending.take() {
            Some((p, n)) => (p.merge(point), n + 1),
            None => (point, 1),
        };
        if n < self.stride {
            self.pending = Some((merged, n));
            return;
        }
        self.points.push(merged);
        if self.points.len() > self.max {
            self.points =
                self.points.chunks(2).map(|c| c.iter().copied().reduce(T::merge).unwrap_or(c[0])).collect();
            self.stride *= 2;
        }
    }

    /// Every point, oldest first (the last one may stand for fewer
    /// incoming points than the others).
    pub fn points(&self) -> impl Iterator<Item = T> + Clone + '_ {
        self.points.iter().copied().chain(self.pending.map(|(p, _)| p))
    }

    pub fn len(&self) -> usize {
        self.points.len() + usize::from(self.pending.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Incoming points per stored point.
    pub fn stride(&self) -> usize {
        self.stride
    }
}

/// One snapshot of a process's memory.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemPoint {
    pub ts: f64,
    pub rss: u64,
    pub committed: u64,
    pub native: u64,
}

/// Merged points keep the later time and the peaks: a report about memory
/// growth must not smooth a peak away.
impl Merge for MemPoint {
    fn merge(self, later: Self) -> Self {
        MemPoint {
            ts: later.ts,
            rss: self.rss.max(later.rss),
            committed: self.committed.max(later.committed),
            native: self.native.max(later.native),
        }
    }
}

/// The JS heap after one major GC: the floor of the seesaw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FloorPoint {
    pub ts: f64,
    pub bytes: u64,
}

/// The later floor stands for both: it is where the floor has got to.
impl Merge for FloorPoint {
    fn merge(self, later: Self) -> Self {
        later
    }
}

/// A group's memory at one snapshot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupPoint {
    pub ts: f64,
    pub rss: u64,
    /// The cgroup's own usage (page cache included).
    pub usage: Option<u64>,
}

impl Merge for GroupPoint {
    fn merge(self, later: Self) -> Self {
        let usage = match (self.usage, later.usage) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => b.or(a),
        };
        GroupPoint { ts: later.ts, rss: self.rss.max(later.rss), usage }
    }
}

/// One GC, as drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GcMark {
    pub ts: f64,
    pub kind: GcKind,
    pub collector: &'static str,
    pub reason: &'static str,
    pub pause_ns: u64,
    pub before: u64,
    pub after: u64,
}

/// The GCs of one minute that left the per-GC log.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MinuteAggregate {
    /// Unix minute (ts / 60, rounded down).
    pub minute: i64,
    pub count: u64,
    pub majors: u64,
    pub pause_ns: u64,
    pub max_pause_ns: u64,
    pub max_before: u64,
    pub min_after: u64,
}

impl MinuteAggregate {
    fn of(g: &GcMark) -> Self {
        MinuteAggregate {
            minute: (g.ts / 60.0).floor() as i64,
            count: 1,
            majors: u64::from(g.kind == GcKind::Major),
            pause_ns: g.pause_ns,
            max_pause_ns: g.pause_ns,
            max_before: g.before,
            min_after: g.after,
        }
    }

    fn add(&mut self, g: &GcMark) {
        self.count += 1;
        self.majors += u64::from(g.kind == GcKind::Major);
        self.pause_ns = self.pause_ns.saturating_add(g.pause_ns);
        self.max_pause_ns = self.max_pause_ns.max(g.pause_ns);
        self.max_before = self.max_before.max(g.before);
        self.min_after = self.min_after.min(g.after);
    }
}

/// Upper bounds of the pause histogram's buckets, ms; the last bucket
/// takes everything above the last bound.
pub const PAUSE_BOUNDS_MS: [f64; 13] =
    [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];
pub const PAUSE_BUCKETS: usize = PAUSE_BOUNDS_MS.len() + 1;

/// The bucket of a pause: the first whose bound it is below.
pub fn pause_bucket(pause_ns: u64) -> usize {
    let ms = pause_ns as f64 / 1e6;
    PAUSE_BOUNDS_MS.iter().position(|&b| ms < b).unwrap_or(PAUSE_BOUNDS_MS.len())
}

/// Every GC of a process: the latest one by one, older ones per minute,
/// and all of them in the pause histogram.
#[derive(Clone, Debug, Default)]
pub struct GcLog {
    pub recent: VecDeque<GcMark>,
    pub minutes: VecDeque<MinuteAggregate>,
    /// GCs seen in all.
    pub total: u64,
    /// Minute aggregates let go past [`KEPT_MINUTES`].
    pub minutes_dropped: u64,
    /// Per bucket: [minor, major or unknown].
    pub histogram: [[u64; 2]; PAUSE_BUCKETS],
}

impl GcLog {
    pub fn push(&mut self, g: GcMark) {
        self.push_bounded(g, KEPT_GCS, KEPT_MINUTES);
    }

    fn push_bounded(&mut self, g: GcMark, kept: usize, minutes: usize) {
        self.total += 1;
        self.histogram[pause_bucket(g.pause_ns)][usize::from(g.kind != GcKind::Minor)] += 1;
        self.recent.push_back(g);
        while self.recent.len() > kept {
            let Some(old) = self.recent.pop_front() else { break };
            match self.minutes.back_mut() {
                Some(m) if m.minute == (old.ts / 60.0).floor() as i64 => m.add(&old),
                _ => self.minutes.push_back(MinuteAggregate::of(&old)),
            }
            while self.minutes.len() > minutes {
                self.minutes.pop_front();
                self.minutes_dropped += 1;
            }
        }
    }
}

/// The report's view of one process.
#[derive(Clone, Debug)]
pub struct ProcessState {
    pub pid: u32,
    pub comm: String,
    pub container: Option<ContainerRef>,
    pub cgroup_id: u64,
    pub last_ts: f64,
    pub snapshots: u64,
    pub memory: Downsampled<MemPoint>,
    pub floor: Downsampled<FloorPoint>,
    pub gcs: GcLog,
    /// The latest, from its last snapshot (or its summary).
    pub verdict: Option<Verdict>,
    pub verdict_changes: VecDeque<VerdictChange>,
    /// Where the JS heap's floor runs out (the old generation's limit, else
    /// V8's heap limit).
    pub v8_limit: Option<u64>,
    pub summary: Option<ProcessSummary>,
    /// How it ended, in words, once it did.
    pub ended: Option<String>,
}

impl ProcessState {
    fn new(pid: u32, comm: &str) -> Self {
        ProcessState {
            pid,
            comm: comm.to_owned(),
            container: None,
            cgroup_id: 0,
            last_ts: 0.0,
            snapshots: 0,
            memory: Downsampled::new(MAX_POINTS),
            floor: Downsampled::new(MAX_POINTS),
            gcs: GcLog::default(),
            verdict: None,
            verdict_changes: VecDeque::new(),
            v8_limit: None,
            summary: None,
            ended: None,
        }
    }
}

/// The report's view of one group (a container or another cgroup).
#[derive(Clone, Debug)]
pub struct GroupState {
    pub latest: GroupSnapshot,
    pub memory: Downsampled<GroupPoint>,
    pub verdict_changes: VecDeque<VerdictChange>,
}

/// Everything the report shows.
#[derive(Clone, Debug, Default)]
pub struct ReportState {
    pub start: Option<Started>,
    pub last_ts: f64,
    pub processes: BTreeMap<u32, ProcessState>,
    pub processes_dropped: u64,
    pub groups: BTreeMap<String, GroupState>,
    pub groups_dropped: u64,
    pub deaths: VecDeque<Death>,
    pub deaths_dropped: u64,
    pub dropped_events: u64,
    /// The summary's own fields (its per-process parts are moved into the
    /// processes).
    pub duration_s: Option<f64>,
}

fn push_bounded<T>(ring: &mut VecDeque<T>, bound: usize, item: T) -> bool {
    ring.push_back(item);
    if ring.len() > bound {
        ring.pop_front();
        return true;
    }
    false
}

impl ReportState {
    pub fn snapshot(&mut self, s: &Snapshot) {
        self.last_ts = self.last_ts.max(s.ts);
        let p = self.process(s.pid, &s.comm);
        p.comm.clone_from(&s.comm);
        p.container.clone_from(&s.container);
        p.cgroup_id = s.cgroup_id;
        p.last_ts = s.ts;
        p.snapshots += 1;
        p.memory.push(MemPoint {
            ts: s.ts,
            rss: s.rss_bytes,
            committed: s.committed_bytes,
            native: s.native_bytes,
        });
        p.verdict = Some(s.verdict.clone());
        p.v8_limit = s.v8_old_generation_limit_bytes.or(s.v8_heap_limit_bytes).or(p.v8_limit);
    }

    pub fn gc(&mut self, g: &Gc) {
        self.last_ts = self.last_ts.max(g.ts);
        let p = self.process(g.pid, "");
        p.last_ts = p.last_ts.max(g.ts);
        let mark = GcMark {
            ts: g.ts,
            kind: g.kind,
            collector: g.collector,
            reason: g.reason,
            pause_ns: g.pause_ns,
            before: g.heap_before_bytes,
            after: g.heap_after_bytes,
        };
        if g.kind == GcKind::Major {
            p.floor.push(FloorPoint { ts: g.ts, bytes: g.heap_after_bytes });
        }
        p.gcs.push(mark);
    }

    pub fn group(&mut self, g: &GroupSnapshot) {
        self.last_ts = self.last_ts.max(g.ts);
        if !self.groups.contains_key(&g.cgroup_path) && self.groups.len() >= KEPT_GROUPS {
            // The group silent the longest gives way.
            let oldest = self
                .groups
                .iter()
                .min_by(|a, b| a.1.latest.ts.total_cmp(&b.1.latest.ts))
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.groups.remove(&k);
                self.groups_dropped += 1;
            }
        }
        let state = self.groups.entry(g.cgroup_path.clone()).or_insert_with(|| GroupState {
            latest: g.clone(),
            memory: Downsampled::new(MAX_POINTS),
            verdict_changes: VecDeque::new(),
        });
        state.latest = g.clone();
        state.memory.push(GroupPoint { ts: g.ts, rss: g.rss_bytes, usage: g.memory_usage_bytes });
    }

    pub fn verdict(&mut self, v: &VerdictChange) {
        self.last_ts = self.last_ts.max(v.ts);
        match v.pid {
            Some(pid) => {
                let p = self.process(pid, v.comm.as_deref().unwrap_or(""));
                p.verdict = Some(v.verdict.clone());
                push_bounded(&mut p.verdict_changes, KEPT_VERDICT_CHANGES, v.clone());
            }
            None => {
                if let Some(g) = self.groups.get_mut(&v.cgroup_path) {
                    g.latest.verdict = v.verdict.clone();
                    push_bounded(&mut g.verdict_changes, KEPT_VERDICT_CHANGES, v.clone());
                }
            }
        }
    }

    pub fn ended(&mut self, pid: u32, ts: f64, how: String) {
        self.last_ts = self.last_ts.max(ts);
        if let Some(p) = self.processes.get_mut(&pid) {
            p.last_ts = p.last_ts.max(ts);
            p.ended = Some(how);
        }
    }

    pub fn death(&mut self, d: &Death) {
        self.ended(d.pid, d.ts, format!("died ({}): {}", d.cause.name(), d.explanation));
        if push_bounded(&mut self.deaths, KEPT_DEATHS, d.clone()) {
            self.deaths_dropped += 1;
        }
    }

    pub fn summary(&mut self, s: &Summary) {
        self.last_ts = self.last_ts.max(s.ts);
        self.duration_s = Some(s.duration_s);
        self.dropped_events = self.dropped_events.max(s.dropped_events);
        for ps in &s.processes {
            // A process the report let go (or one without any snapshot)
            // comes back with its summary only.
            let p = self.process(ps.pid, &ps.comm);
            p.comm.clone_from(&ps.comm);
            p.container.clone_from(&ps.container);
            p.cgroup_id = ps.cgroup_id;
            p.verdict = Some(ps.verdict.clone());
            p.v8_limit = ps.v8_old_generation_limit_bytes.or(ps.v8_heap_limit_bytes).or(p.v8_limit);
            p.summary = Some(ps.clone());
        }
        for g in &s.groups {
            self.group(&g.snapshot);
        }
    }

    /// The process's state, made if new; past [`KEPT_PROCESSES`] an ended
    /// process, else the longest silent, is let go first.
    fn process(&mut self, pid: u32, comm: &str) -> &mut ProcessState {
        if !self.processes.contains_key(&pid) && self.processes.len() >= KEPT_PROCESSES {
            let victim = self
                .processes
                .values()
                .min_by(|a, b| {
                    (a.ended.is_none(), a.last_ts)
                        .partial_cmp(&(b.ended.is_none(), b.last_ts))
                        .unwrap_or(std::cmp::Ordering::Equal)
                })
                .map(|p| p.pid);
            if let Some(pid) = victim {
                self.processes.remove(&pid);
                self.processes_dropped += 1;
            }
        }
        self.processes.entry(pid).or_insert_with(|| ProcessState::new(pid, comm))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Merge for (f64, u64) {
        fn merge(self, later: Self) -> Self {
            (later.0, self.1.max(later.1))
        }
    }

    #[test]
    fn a_series_halves_its_resolution_and_keeps_the_whole_run_and_its_peaks() {
        let mut s = Downsampled::new(100);
        for i in 0..10_000u64 {
            // One peak in the middle.
            s.push((i as f64, if i == 5_003 { 1_000_000 } else { i }));
        }
        assert!(s.len() <= 101 && s.len() > 50, "{}", s.len());
        let pts: Vec<_> = s.points().collect();
        assert!(pts[0].0 < 128.0, "the start is still covered: {:?}", pts[0]);
        assert_eq!(pts.last().unwrap().0, 9_999.0, "the newest point is there");
        assert!(pts.windows(2).all(|w| w[0].0 < w[1].0), "in time order");
        assert_eq!(pts.iter().map(|p| p.1).max(), Some(1_000_000), "the peak survives");
        assert_eq!(s.stride(), 128);
    }

    #[test]
    fn a_short_series_is_kept_point_by_point() {
        let mut s = Downsampled::new(MAX_POINTS);
        for i in 0..40u64 {
            s.push((i as f64, i));
        }
        assert_eq!(s.len(), 40);
        assert_eq!(s.stride(), 1);
    }

    fn gc(ts: f64, kind: GcKind, pause_ms: f64) -> GcMark {
        GcMark {
            ts,
            kind,
            collector: "Scavenge",
            reason: "allocation failure",
            pause_ns: (pause_ms * 1e6) as u64,
            before: 10,
            after: 5,
        }
    }

    #[test]
    fn old_gcs_go_into_minute_aggregates_and_all_into_the_histogram() {
        let mut log = GcLog::default();
        // 300 GCs, 2 a second: minutes 0, 1 and 2 (150 s).
        for i in 0..300 {
            let kind = if i % 10 == 0 { GcKind::Major } else { GcKind::Minor };
            log.push_bounded(gc(i as f64 * 0.5, kind, 0.3), 100, 2);
        }
        assert_eq!(log.total, 300);
        assert_eq!(log.recent.len(), 100);
        assert_eq!(log.recent[0].ts, 100.0);
        // 200 left the log: minute 0 (0-59.5 s) and minute 1 (60-99.5 s).
        let counts: Vec<(i64, u64, u64)> =
            log.minutes.iter().map(|m| (m.minute, m.count, m.majors)).collect();
        assert_eq!(counts, [(0, 120, 12), (1, 80, 8)]);
        assert_eq!(log.minutes_dropped, 0);
        let in_histogram: u64 = log.histogram.iter().flatten().sum();
        assert_eq!(in_histogram, 300);
        assert_eq!(log.histogram[pause_bucket(300_000)], [270, 30]);

        let mut log = GcLog::default();
        for i in 0..400 {
            log.push_bounded(gc(i as f64, GcKind::Minor, 1.0), 10, 3);
        }
        // 390 left the log (0-389 s: minutes 0-6); the last 3 minutes kept.
        assert_eq!(log.minutes.iter().map(|m| m.minute).collect::<Vec<_>>(), [4, 5, 6]);
        assert_eq!(log.minutes_dropped, 4);
    }

    #[test]
    fn pause_buckets_split_at_their_bounds() {
        assert_eq!(pause_bucket(0), 0);
        assert_eq!(pause_bucket(99_999), 0);
        assert_eq!(pause_bucket(100_000), 1);
        assert_eq!(pause_bucket(1_000_000), 4);
        assert_eq!(pause_bucket(999_999_999), PAUSE_BUCKETS - 2);
        assert_eq!(pause_bucket(5_000_000_000), PAUSE_BUCKETS - 1);
    }
}
