//! Records → Prometheus series. A [`Sink`] that keeps the latest figures
//! per process and turns them into series labelled like cAdvisor's
//! (`namespace`, `pod`, `container`, plus `container_id`, `pod_uid` and
//! `node`), so PromQL joins them with `container_spec_memory_limit_bytes`
//! and `kube_pod_info`. docs/metrics.md lists every series.
//!
//! No I/O here: the HTTP edge renders [`MetricsSink::encode`] and feeds the
//! agent's own CPU and RSS in with [`MetricsSink::set_self_usage`].
//!
//! Series lifetime: gauges describe the present, so a group's gauges go
//! when its last process does. Counters and histograms are cumulative; they
//! stay for `grace` after their last update, so `rate()` and
//! `histogram_quantile()` over the last minutes still see them, then go.

mod families;
mod verdict;

use std::{
    collections::{BTreeMap, HashMap},
    io,
};

use families::Families;
use prometheus_client::registry::Registry;
use serde::Serialize;
use verdict::Exposed;

use crate::{
    core::{
        Record,
        container::ContainerRef,
        record::{DeathCause, GroupSnapshot, MappingOp, Snapshot},
    },
    output::{CollectorStats, Sink},
};

/// `Vec<(name, value)>`: prometheus-client encodes it as a label set, and
/// it lets one family carry group or per-process labels alike.
pub type Labels = Vec<(&'static str, String)>;

/// prom-client's `nodejs_gc_duration_seconds` buckets (0.001 … 5 s), plus
/// finer ones below 1 ms, where most scavenges land.
pub const GC_BUCKETS: [f64; 12] =
    [0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 1.0, 2.0, 5.0];

/// At most this many observations per process per interval for the
/// incremental-marking and weak-callback histograms (see `observe_work`).
const MAX_WORK_OBSERVATIONS: u64 = 100_000;

/// The stamp of a series updated since the last tick.
const UPDATED_THIS_INTERVAL: u64 = 0;

#[derive(Clone, Debug)]
pub struct MetricsConfig {
    /// The `node` label: the Kubernetes node (downward API) or host name.
    pub node: String,
    /// Series per process, with `pid` and `comm` labels.
    pub per_process: bool,
    /// How long cumulative series outlive their last update.
    pub grace_ns: u64,
    /// Metric name prefix (without the trailing `_`).
    pub prefix: String,
}

/// What the agent remembers of one live process.
struct Proc {
    series: Labels,
    last: Option<Snapshot>,
}

pub struct MetricsSink {
    cfg: MetricsConfig,
    registry: Registry,
    f: Families,
    procs: HashMap<u32, Proc>,
    /// Label sets of cumulative series, with their last update.
    cumulative: HashMap<Labels, u64>,
    /// Label sets that had gauges at the last tick.
    gauges: Vec<Labels>,
    /// cgroup gauges' label sets at the last tick.
    cgroup_gauges: Vec<Labels>,
    /// Verdict series per series label set, at the last tick.
    verdicts: HashMap<Labels, Exposed>,
    /// The latest group records, for the JSON endpoint.
    groups: BTreeMap<String, GroupSnapshot>,
    /// Time of this interval's group records, if any came.
    group_ts: Option<f64>,
    last_stats: CollectorStats,
    self_cpu_s: f64,
    now_ns: u64,
    ticks: u64,
    /// Tracing is set up (the collector's `start` record came).
    started: bool,
}

/// The JSON endpoint's answer: what is traced now, per group.
#[derive(Serialize)]
pub struct Findings<'a> {
    pub node: &'a str,
    pub groups: Vec<&'a GroupSnapshot>,
    pub processes: Vec<&'a Snapshot>,
}

impl MetricsSink {
    pub fn new(cfg: MetricsConfig) -> Self {
        let mut registry = Registry::with_prefix(cfg.prefix.clone());
        let f = Families::register(&mut registry);
        Self {
            cfg,
            registry,
            f,
            procs: HashMap::new(),
            cumulative: HashMap::new(),
            gauges: Vec::new(),
            cgroup_gauges: Vec::new(),
            verdicts: HashMap::new(),
            groups: BTreeMap::new(),
            group_ts: None,
            last_stats: CollectorStats::default(),
            self_cpu_s: 0.0,
            now_ns: 0,
            ticks: 0,
            started: false,
        }
    }

    /// The group labels of a container. Unknown ones are left out (as
    /// Prometheus reads an empty label): a process outside any container
    /// has only `node`.
    fn group_labels(&self, c: Option<&ContainerRef>) -> Labels {
        let labels = [
            ("namespace", c.and_then(|c| c.namespace.clone())),
            ("pod", c.and_then(|c| c.pod.clone())),
            ("container", c.and_then(|c| c.container.clone())),
            ("container_id", c.map(|c| c.container_id.clone())),
            ("pod_uid", c.and_then(|c| c.pod_uid.clone())),
            ("node", Some(self.cfg.node.clone())),
        ];
        labels.into_iter().filter_map(|(k, v)| Some((k, v.filter(|v| !v.is_empty())?))).collect()
    }

    /// The labels of a traced process's series; for one that is gone
    /// already (its exit came first), built from the record's own fields.
    fn series_of(&self, pid: u32, comm: &str, c: Option<&ContainerRef>) -> Labels {
        match self.procs.get(&pid) {
            Some(p) => p.series.clone(),
            None => self.series_labels(pid, comm, c),
        }
    }

    fn series_labels(&self, pid: u32, comm: &str, c: Option<&ContainerRef>) -> Labels {
        let mut l = self.group_labels(c);
        if self.cfg.per_process {
            l.push(("pid", pid.to_string()));
            l.push(("comm", comm.to_owned()));
        }
        l
    }

    fn with(labels: &Labels, name: &'static str, value: &str) -> Labels {
        let mut l = labels.clone();
        l.push((name, value.to_owned()));
        l
    }

    /// Marks a cumulative series as updated in this interval (stamped with
    /// the interval's end at the next tick: records carry wall-clock times,
    /// the grace period runs on the collector's clock).
    fn touch(&mut self, labels: &Labels) {
        self.cumulative.insert(labels.clone(), UPDATED_THIS_INTERVAL);
    }

    fn on_snapshot(&mut self, s: &Snapshot) {
        let Some(p) = self.procs.get_mut(&s.pid) else { return };
        let prev = p.last.replace(s.clone());
        let series = p.series.clone();
        // Work outside pauses is counted in the kernel as totals: spread
        // each interval's new steps evenly over their total time.
        let (prev_steps, prev_step_ns, prev_weak, prev_weak_ns) = prev.map_or((0, 0, 0, 0), |p| {
            (p.marking_steps, p.marking_step_ns, p.weak_callbacks, p.weak_callback_ns)
        });
        let work = [
            (
                "incremental",
                s.marking_steps.saturating_sub(prev_steps),
                s.marking_step_ns.saturating_sub(prev_step_ns),
            ),
            (
                "weakcb",
                s.weak_callbacks.saturating_sub(prev_weak),
                s.weak_callback_ns.saturating_sub(prev_weak_ns),
            ),
        ];
        for (kind, count, ns) in work {
            if count == 0 {
                continue;
            }
            let labels = Self::with(&series, "kind", kind);
            let h = self.f.gc_duration.get_or_create(&labels);
            let each = ns as f64 / count as f64 / 1e9;
            for _ in 0..count.min(MAX_WORK_OBSERVATIONS) {
                h.observe(each);
            }
            drop(h);
            self.touch(&labels);
        }
    }

    /// Sets the gauges from the latest snapshots and group records, and lets
    /// go of series past their time.
    fn publish(&mut self) {
        self.publish_process_gauges();
        self.publish_cgroup_gauges();
        self.publish_verdicts();
        self.expire_cumulative();
    }

    /// Memory gauges per series (a group, or a process with
    /// `--per-process`): sums over its processes' latest snapshots.
    fn publish_process_gauges(&mut self) {
        #[derive(Default)]
        struct Sums {
            anon: i64,
            file: i64,
            shmem: i64,
            committed: i64,
            mapped: i64,
            brk: i64,
            growth: f64,
            processes: i64,
            heap_after_major: Option<i64>,
            heap_limit: Option<i64>,
        }
        let mut sums: HashMap<Labels, Sums> = HashMap::new();
        for p in self.procs.values() {
            let Some(s) = &p.last else { continue };
            let e = sums.entry(p.series.clone()).or_default();
            e.anon += s.rss_anon_bytes as i64;
            e.file += s.rss_file_bytes as i64;
            e.shmem += s.rss_shmem_bytes as i64;
            e.committed += s.committed_bytes as i64;
            e.mapped += s.mapped_bytes as i64;
            e.brk += s.brk_bytes as i64;
            e.growth += s.rss_growth_bytes_per_s;
            e.processes += 1;
            if let Some(h) = s.heap_after_last_major_bytes {
                *e.heap_after_major.get_or_insert(0) += h as i64;
            }
            if let Some(h) = s.v8_heap_limit_bytes {
                *e.heap_limit.get_or_insert(0) += h as i64;
            }
        }
        // Gauges of groups (or processes) that are gone go now.
        for old in std::mem::take(&mut self.gauges) {
            if !sums.contains_key(&old) {
                self.remove_gauges(&old);
            }
        }
        for (labels, s) in &sums {
            let f = &self.f;
            for (kind, v) in [("anon", s.anon), ("file", s.file), ("shmem", s.shmem)] {
                f.resident.get_or_create(&Self::with(labels, "type", kind)).set(v);
            }
            f.committed.get_or_create(labels).set(s.committed);
            f.mapped.get_or_create(labels).set(s.mapped);
            f.brk.get_or_create(labels).set(s.brk);
            f.growth.get_or_create(labels).set(s.growth);
            f.processes.get_or_create(labels).set(s.processes);
            match s.heap_after_major {
                Some(v) => drop(f.heap_after_major.get_or_create(labels).set(v)),
                None => drop(f.heap_after_major.remove(labels)),
            }
            match s.heap_limit {
                Some(v) => drop(f.heap_limit.get_or_create(labels).set(v)),
                None => drop(f.heap_limit.remove(labels)),
            }
        }
        self.gauges = sums.into_keys().collect();
    }

    /// The cgroups' own figures, per group.
    fn publish_cgroup_gauges(&mut self) {
        let mut cgroup_now = Vec::new();
        for g in self.groups.values() {
            let labels = self.group_labels(g.container.as_ref());
            if let Some(usage) = g.memory_usage_bytes {
                self.f.cgroup_usage.get_or_create(&labels).set(usage as i64);
                match (g.memory_limit_bytes, g.memory_headroom_bytes) {
                    (Some(limit), Some(headroom)) => {
                        self.f.cgroup_limit.get_or_create(&labels).set(limit as i64);
                        self.f.cgroup_headroom.get_or_create(&labels).set(headroom as i64);
                    }
                    _ => {
                        self.f.cgroup_limit.remove(&labels);
                        self.f.cgroup_headroom.remove(&labels);
                    }
                }
                cgroup_now.push(labels);
            }
        }
        for old in std::mem::take(&mut self.cgroup_gauges) {
            if !cgroup_now.contains(&old) {
                self.f.cgroup_usage.remove(&old);
                self.f.cgroup_limit.remove(&old);
                self.f.cgroup_headroom.remove(&old);
            }
        }
        self.cgroup_gauges = cgroup_now;
    }

    /// Cumulative series go once past their grace period.
    fn expire_cumulative(&mut self) {
        let now = self.now_ns;
        for seen in self.cumulative.values_mut() {
            if *seen == UPDATED_THIS_INTERVAL {
                *seen = now;
            }
        }
        let grace = self.cfg.grace_ns;
        let stale: Vec<Labels> = self
            .cumulative
            .iter()
            .filter(|(_, seen)| now.saturating_sub(**seen) > grace)
            .map(|(l, _)| l.clone())
            .collect();
        for labels in stale {
            self.cumulative.remove(&labels);
            self.f.gc_duration.remove(&labels);
            self.f.gc_reclaimed.remove(&labels);
            self.f.large_allocations.remove(&labels);
            self.f.oom_kills.remove(&labels);
            self.f.deaths.remove(&labels);
        }
    }

    fn remove_gauges(&self, labels: &Labels) {
        let f = &self.f;
        for kind in ["anon", "file", "shmem"] {
            f.resident.remove(&Self::with(labels, "type", kind));
        }
        f.committed.remove(labels);
        f.mapped.remove(labels);
        f.brk.remove(labels);
        f.growth.remove(labels);
        f.processes.remove(labels);
        f.heap_after_major.remove(labels);
        f.heap_limit.remove(labels);
    }

    /// The agent's own CPU time (seconds, cumulative) and RSS, read by the
    /// edge at scrape time.
    pub fn set_self_usage(&mut self, cpu_s: f64, rss_bytes: u64) {
        if cpu_s > self.self_cpu_s {
            self.f.cpu.inc_by(cpu_s - self.self_cpu_s);
            self.self_cpu_s = cpu_s;
        }
        self.f.rss.set(rss_bytes as i64);
    }

    /// The exposition, OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn findings(&self) -> Findings<'_> {
        let mut processes: Vec<&Snapshot> = self.procs.values().filter_map(|p| p.last.as_ref()).collect();
        processes.sort_by_key(|s| std::cmp::Reverse(s.rss_growth_bytes));
        Findings { node: &self.cfg.node, groups: self.groups.values().collect(), processes }
    }

    /// Whether tracing is set up, intervals completed, and the collector's
    /// clock at the last one.
    pub fn progress(&self) -> (bool, u64, u64) {
        (self.started, self.ticks, self.now_ns)
    }

    /// Label sets the agent is keeping (bounded by live processes and
    /// groups, plus what the grace period holds).
    pub fn series_sets(&self) -> usize {
        self.cumulative.len()
            + self.gauges.len()
            + self.cgroup_gauges.len()
            + self.verdicts.values().map(Exposed::label_sets).sum::<usize>()
    }
}

impl Sink for MetricsSink {
    fn record(&mut self, record: &Record) -> io::Result<()> {
        match record {
            Record::Start(_) => self.started = true,
            Record::Attach(a) => {
                let series = self.series_labels(a.pid, &a.comm, a.container.as_ref());
                // The OOM counter starts at 0 so that `increase()` sees the
                // first kill (a counter born at 1 shows no increase).
                for source in ["kernel", "v8"] {
                    let oom = Self::with(&series, "source", source);
                    drop(self.f.oom_kills.get_or_create(&oom));
                    self.touch(&oom);
                }
                for cause in [DeathCause::V8Oom, DeathCause::OomKill, DeathCause::Signal] {
                    let death = Self::with(&series, "cause", cause.name());
                    drop(self.f.deaths.get_or_create(&death));
                    self.touch(&death);
                }
                self.procs.insert(a.pid, Proc { series, last: None });
            }
            Record::Snapshot(s) => self.on_snapshot(s),
            Record::Group(c) => {
                self.group_ts = Some(c.ts);
                self.groups.insert(c.cgroup_path.clone(), c.clone());
            }
            Record::Gc(g) => {
                let series = match self.procs.get(&g.pid) {
                    Some(p) => p.series.clone(),
                    None => self.series_labels(g.pid, "", g.container.as_ref()),
                };
                let labels = Self::with(&series, "kind", g.kind.name());
                self.f.gc_duration.get_or_create(&labels).observe(g.pause_ns as f64 / 1e9);
                self.f
                    .gc_reclaimed
                    .get_or_create(&labels)
                    .inc_by(g.heap_before_bytes.saturating_sub(g.heap_after_bytes));
                self.touch(&labels);
            }
            Record::Mapping(m) if m.op != MappingOp::Munmap => {
                if let Some(series) = self.procs.get(&m.pid).map(|p| p.series.clone()) {
                    self.f.large_allocations.get_or_create(&series).inc();
                    self.touch(&series);
                }
            }
            Record::Oom(o) => {
                let series = self.series_of(o.pid, &o.comm, o.container.as_ref());
                let labels = Self::with(&series, "source", o.source.name());
                self.f.oom_kills.get_or_create(&labels).inc();
                self.touch(&labels);
            }
            Record::Death(d) => {
                let series = self.series_of(d.pid, &d.comm, d.container.as_ref());
                let labels = Self::with(&series, "cause", d.cause.name());
                self.f.deaths.get_or_create(&labels).inc();
                self.touch(&labels);
            }
            Record::Exit(e) => {
                self.procs.remove(&e.pid);
            }
            Record::Summary(_) => {
                // The run is over: groups with no live process are gone.
                self.groups.retain(|_, g| g.processes > 0);
            }
            _ => {}
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn tick(&mut self, stats: &CollectorStats) {
        self.now_ns = stats.now_ns;
        self.ticks += 1;
        let last = self.last_stats;
        self.f.events.inc_by(stats.events.saturating_sub(last.events));
        self.f.dropped.inc_by(stats.dropped.saturating_sub(last.dropped));
        self.f.attach_failures.inc_by(stats.probe_attach_failures.saturating_sub(last.probe_attach_failures));
        self.f.traced.set(stats.model.live_processes as i64);
        self.last_stats = *stats;
        // Groups without a record this interval have no live process.
        let this_tick = std::mem::take(&mut self.group_ts);
        self.groups.retain(|_, g| this_tick.is_some_and(|ts| g.ts >= ts));
        self.publish();
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod verdict_tests;
