//! A group: the traced processes that share one cgroup. That is a
//! container, a pod's container, a systemd service or a session; the
//! cgroup (v2) path is its key, and a container when the path has a
//! runtime's shape.

use super::{container::ContainerRef, gc::GcStats, input::CgroupSample};

pub struct Group {
    pub cgroup_path: String,
    pub cgroup_id: u64,
    pub container: Option<ContainerRef>,
    /// The cgroup's own memory figures, latest reading.
    pub memory: Option<CgroupSample>,
    /// Its usage at the first reading, for growth.
    pub first_usage: Option<u64>,
    /// Pauses of all its processes, exited ones included.
    pub gc: GcStats,
    pub exited_processes: u64,
    /// Last time a process of it was live (for dropping idle groups).
    pub last_active_ns: u64,
    pub verdict: super::verdict::Verdict,
    /// Its usage over the last minutes: (seconds, bytes).
    usage: std::collections::VecDeque<(f64, f64)>,
}

impl Group {
    pub fn new(cgroup_path: String, cgroup_id: u64, container: Option<ContainerRef>, now_ns: u64) -> Self {
        Self {
            cgroup_path,
            cgroup_id,
            container,
            memory: None,
            first_usage: None,
            gc: GcStats::default(),
            exited_processes: 0,
            last_active_ns: now_ns,
            verdict: super::verdict::Verdict::unknown("just attached"),
            usage: std::collections::VecDeque::new(),
        }
    }

    /// Takes the cgroup's latest memory reading.
    pub fn observe_memory(&mut self, sample: CgroupSample) {
        self.first_usage.get_or_insert(sample.usage_bytes);
        let t = sample.ts_ns as f64 / 1e9;
        self.usage.push_back((t, sample.usage_bytes as f64));
        while self.usage.front().is_some_and(|&(t0, _)| t0 < t - super::verdict::NATIVE_WINDOW_S) {
            self.usage.pop_front();
        }
        self.memory = Some(sample);
    }

    /// When the cgroup's usage, at its fitted growth, reaches its limit:
    /// (seconds from now, the limit). None without a limit or growth.
    pub fn cgroup_forecast(&self) -> Option<(f64, u64)> {
        let limit = self.memory.as_ref()?.limit_bytes?;
        let f = super::verdict::fit(self.usage.iter())?;
        (f.slope > 0.0 && f.span_s >= super::verdict::MIN_SPAN_S)
            .then(|| ((limit as f64 - f.at_end).max(0.0) / f.slope, limit))
    }
}
