//! The aggregation model: inputs in, records out. No I/O.
//!
//! State is bounded whatever the churn: a process that exits is folded into
//! its group's totals and kept only as a summary, and at most
//! [`RETIRED_KEPT`] such summaries (the latest) are kept. Groups (a
//! container, or any other cgroup) with no live process are dropped oldest
//! first beyond [`IDLE_GROUPS_KEPT`].

use std::collections::{BTreeMap, VecDeque};

use super::{
    container::{ContainerRef, parse_cgroup_path},
    gc::{GcKind, GcStats, collector_name, reason_name},
    input::{CgroupSample, Event, EventKind, Input, MemOp, ProcStatus, ProcessInfo, Sample},
    process::{ProcessState, chunk_classes, delta},
    record::{
        Attached, ChunkClassGrowth, ContainerSnapshot, ContainerSummary, Dropped, Exit, Gc, GcSummary,
        LargeMapping, LiveMapping, Oom, ProcessSummary, Record, Snapshot, Summary,
    },
};
use crate::units::{fmt_bytes, fmt_delta, fmt_size_class};

/// How many of the largest live mappings a summary lists.
const LARGEST_MAPPINGS: usize = 5;

/// Summaries of exited processes kept for the final summary (the latest).
pub const RETIRED_KEPT: usize = 64;

/// Groups without a live process kept (the most recently active).
pub const IDLE_GROUPS_KEPT: usize = 64;

#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub page_size: u64,
    /// mmap/mremap/munmap at or above this size become `mapping` records.
    pub large_threshold: u64,
    /// Unix time minus CLOCK_MONOTONIC, in ns: turns kernel timestamps into
    /// wall-clock times for output.
    pub wall_offset_ns: i64,
    /// Description of the memory-syscall hook in use, for the summary.
    pub mem_hook: String,
    /// Emit a `container` record per group each interval even for groups
    /// that are not containers (host-wide and cgroup selections).
    pub group_all: bool,
}

/// Processes sharing one cgroup: a container, a pod's container, a
/// systemd service, a session.
struct Group {
    cgroup_path: String,
    cgroup_id: u64,
    container: Option<ContainerRef>,
    memory: Option<CgroupSample>,
    first_usage: Option<u64>,
    gc: GcStats,
    exited_processes: u64,
    /// Last time a process of it was live (for dropping idle groups).
    last_active_ns: u64,
}

pub struct Model {
    cfg: ModelConfig,
    /// Live processes only.
    processes: BTreeMap<u32, ProcessState>,
    /// Summaries of exited processes, latest last.
    retired: VecDeque<ProcessSummary>,
    exited_total: u64,
    groups: BTreeMap<String, Group>,
    start_ns: Option<u64>,
    now_ns: u64,
    kernel_drops: u64,
    undecodable: u64,
}

/// Counts of what the model holds, to show that state stays bounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ModelSize {
    pub live_processes: usize,
    pub retired_kept: usize,
    pub groups: usize,
}

impl Model {
    pub fn new(cfg: ModelConfig) -> Self {
        Self {
            cfg,
            processes: BTreeMap::new(),
            retired: VecDeque::new(),
            exited_total: 0,
            groups: BTreeMap::new(),
            start_ns: None,
            now_ns: 0,
            kernel_drops: 0,
            undecodable: 0,
        }
    }

    /// Applies one input; any records it causes are appended to `out`.
    pub fn apply(&mut self, input: Input, out: &mut Vec<Record>) {
        match input {
            Input::Attach(info) => self.attach(info, out),
            Input::Event(event) => self.apply_event(event, out),
            Input::Sample(sample) => self.apply_sample(sample),
            Input::Drops { ts_ns, kernel, undecodable } => {
                self.observe_time(ts_ns);
                let ts = self.wall(ts_ns);
                let total = kernel + undecodable;
                for (new, old, reason) in [
                    (kernel, self.kernel_drops, "ring_buffer_full"),
                    (undecodable, self.undecodable, "undecodable"),
                ] {
                    if new > old {
                        out.push(Record::Dropped(Dropped { ts, count: new - old, total, reason }));
                    }
                }
                self.kernel_drops = self.kernel_drops.max(kernel);
                self.undecodable = self.undecodable.max(undecodable);
            }
            Input::Cgroup(sample) => {
                self.observe_time(sample.ts_ns);
                if let Some(g) = self.groups.get_mut(&sample.cgroup_path) {
                    g.first_usage.get_or_insert(sample.usage_bytes);
                    g.memory = Some(sample);
                }
            }
        }
    }

    fn attach(&mut self, mut info: ProcessInfo, out: &mut Vec<Record>) {
        self.observe_time(info.ts_ns);
        // Known only by its cgroup id (it was gone before /proc could be
        // read): the group with that id, if one is known.
        if info.cgroup_path.is_none() && info.cgroup_id != 0 {
            info.cgroup_path =
                self.groups.values().find(|g| g.cgroup_id == info.cgroup_id).map(|g| g.cgroup_path.clone());
        }
        let ts_ns = info.ts_ns;
        // The same pid attached again: it exec'd a new program, or the pid
        // was reused after an exit we missed. Either way the old image is
        // finished.
        if self.processes.contains_key(&info.pid) {
            self.retire(info.pid, ts_ns, false, out);
        }
        let key = info.cgroup_path.clone().unwrap_or_default();
        let container =
            info.container.clone().or_else(|| info.cgroup_path.as_deref().and_then(parse_cgroup_path));
        let group = self.groups.entry(key.clone()).or_insert_with(|| Group {
            cgroup_path: key.clone(),
            cgroup_id: info.cgroup_id,
            container: container.clone(),
            memory: None,
            first_usage: None,
            gc: GcStats::default(),
            exited_processes: 0,
            last_active_ns: ts_ns,
        });
        group.last_active_ns = ts_ns;
        if info.cgroup_id != 0 {
            group.cgroup_id = info.cgroup_id;
        }
        if group.container.is_none() {
            group.container = container.clone();
        }
        let mut state = ProcessState::new(info, self.cfg.page_size);
        state.container = container;
        state.group = key;
        self.add(state, out);
    }

    /// Whether a process's fork can be followed from the model alone (its
    /// parent is traced here).
    pub fn can_fork(&self, parent_pid: u32) -> bool {
        self.processes.contains_key(&parent_pid)
    }

    fn add(&mut self, state: ProcessState, out: &mut Vec<Record>) {
        if let Some(g) = self.groups.get_mut(&state.group) {
            g.last_active_ns = state.attached_ns;
        }
        out.push(Record::Attach(Attached {
            pid: state.pid,
            comm: state.comm.clone(),
            origin: state.origin,
            gc_probes: state.gc_probed,
            cgroup_id: state.cgroup_id,
            container: state.container.clone(),
            ns_pid: state.ns_pid,
            ts: self.wall(state.attached_ns),
        }));
        self.processes.insert(state.pid, state);
    }

    /// Ends a live process: its summary joins the retired list, its group
    /// keeps the totals.
    fn retire(&mut self, pid: u32, ts_ns: u64, exited: bool, out: &mut Vec<Record>) {
        let Some(mut p) = self.processes.remove(&pid) else { return };
        if p.exited_ns.is_none() {
            p.exited_ns = Some(ts_ns);
        }
        if exited {
            out.push(Record::Exit(Exit {
                ts: self.wall(ts_ns),
                pid: p.pid,
                comm: p.comm.clone(),
                oom_killed: p.oom_killed,
                traced_s: p.seconds_traced(ts_ns),
                cgroup_id: p.cgroup_id,
                container: p.container.clone(),
            }));
        }
        let mut summary = process_summary(&p, ts_ns);
        summary.exited = exited;
        summary.replaced_by_exec = !exited;
        if let Some(g) = self.groups.get_mut(&p.group) {
            g.exited_processes += 1;
            g.last_active_ns = ts_ns;
        }
        self.exited_total += 1;
        self.retired.push_back(summary);
        while self.retired.len() > RETIRED_KEPT {
            self.retired.pop_front();
        }
        self.drop_idle_groups();
    }

    fn drop_idle_groups(&mut self) {
        let busy: std::collections::BTreeSet<&str> =
            self.processes.values().map(|p| p.group.as_str()).collect();
        let mut idle: Vec<(u64, String)> = self
            .groups
            .iter()
            .filter(|(k, _)| !busy.contains(k.as_str()))
            .map(|(k, g)| (g.last_active_ns, k.clone()))
            .collect();
        if idle.len() <= IDLE_GROUPS_KEPT {
            return;
        }
        idle.sort();
        for (_, key) in idle.into_iter().rev().skip(IDLE_GROUPS_KEPT) {
            self.groups.remove(&key);
        }
    }

    fn apply_event(&mut self, event: Event, out: &mut Vec<Record>) {
        self.observe_time(event.ts_ns);
        let ts = self.wall(event.ts_ns);
        let threshold = self.cfg.large_threshold;
        match &event.kind {
            EventKind::Exit { calls, gc_work } => {
                if let Some(p) = self.processes.get_mut(&event.pid) {
                    p.calls = *calls;
                    p.gc_work = *gc_work;
                    self.retire(event.pid, event.ts_ns, true, out);
                }
                return;
            }
            // A traced process left the selection by exec'ing another
            // program (a re-selected one is attached again by the edge).
            EventKind::Exec { traced: false, was_traced: true, .. } => {
                self.retire(event.pid, event.ts_ns, false, out);
                return;
            }
            EventKind::Fork { parent_pid, .. } => {
                if let Some(parent) = self.processes.get(parent_pid)
                    && !self.processes.contains_key(&event.pid)
                {
                    let child = parent.fork_child(event.pid, event.ts_ns);
                    self.add(child, out);
                }
                return;
            }
            EventKind::Exec { .. } => return,
            _ => {}
        }
        let Some(p) = self.processes.get_mut(&event.pid) else {
            // Events of a process not (or no longer) attached: ignored. The
            // kernel filter makes this rare (a race with detach).
            return;
        };
        if event.cgroup_id != 0 {
            p.cgroup_id = event.cgroup_id;
        }
        match event.kind {
            EventKind::Mem(op) => {
                if let Some(large) = large_mapping(&op, threshold) {
                    p.large_mappings += 1;
                    out.push(Record::Mapping(LargeMapping {
                        ts,
                        pid: event.pid,
                        tid: event.tid,
                        cgroup_id: p.cgroup_id,
                        ..large
                    }));
                }
                p.apply(&op);
            }
            EventKind::Gc(pause) => {
                p.gc.record(event.ts_ns, &pause);
                if let Some(g) = self.groups.get_mut(&p.group) {
                    g.gc.record(event.ts_ns, &pause);
                }
                out.push(Record::Gc(Gc {
                    ts,
                    pid: event.pid,
                    tid: event.tid,
                    kind: GcKind::of(pause.collector).name(),
                    collector: collector_name(pause.collector, pause.v8_timestamps),
                    reason: reason_name(pause.reason),
                    pause_ns: pause.pause_ns,
                    heap_before_bytes: pause.heap_before,
                    heap_after_bytes: pause.heap_after,
                    marking_steps: pause.marking_steps,
                    marking_step_ns: pause.marking_step_ns,
                    marking_start_ns: pause.marking_start_ns,
                    cgroup_id: p.cgroup_id,
                    container: p.container.clone(),
                }));
            }
            EventKind::OomVictim { anon_rss, file_rss, shmem_rss, total_vm } => {
                p.oom_killed = true;
                let sizes = ProcStatus {
                    vm_size: total_vm,
                    rss_anon: anon_rss,
                    rss_file: file_rss,
                    rss_shmem: shmem_rss,
                };
                out.push(Record::Oom(oom_record(p, ts, "kernel", sizes)));
            }
            EventKind::V8OutOfMemory => {
                // Counted once: one fatal-OOM overload may call another.
                if !p.v8_oom {
                    p.v8_oom = true;
                    out.push(Record::Oom(oom_record(p, ts, "v8", p.status)));
                }
            }
            EventKind::Exit { .. } | EventKind::Exec { .. } | EventKind::Fork { .. } => {}
        }
    }

    fn apply_sample(&mut self, sample: Sample) {
        self.observe_time(sample.ts_ns);
        let Some(p) = self.processes.get_mut(&sample.pid) else { return };
        p.calls = sample.calls;
        if let Some(work) = sample.gc_work {
            p.gc_work = work;
        }
        if let Some(status) = sample.status {
            p.status = status;
            p.last_sample_ns = sample.ts_ns;
        }
    }

    fn observe_time(&mut self, ts_ns: u64) {
        self.start_ns.get_or_insert(ts_ns);
        self.now_ns = self.now_ns.max(ts_ns);
    }

    fn wall(&self, ts_ns: u64) -> f64 {
        (ts_ns as i64 + self.cfg.wall_offset_ns) as f64 / 1e9
    }

    /// Whether any traced process is still running.
    pub fn any_live(&self) -> bool {
        !self.processes.is_empty()
    }

    /// Whether `pid` is traced and running.
    pub fn is_live(&self, pid: u32) -> bool {
        self.processes.contains_key(&pid)
    }

    /// Pids still being traced (attached and not exited).
    pub fn live_pids(&self) -> Vec<u32> {
        self.processes.keys().copied().collect()
    }

    /// Live pids with their group (v2 cgroup path; "" if unknown).
    pub fn live_pids_and_groups(&self) -> Vec<(u32, String)> {
        self.processes.values().map(|p| (p.pid, p.group.clone())).collect()
    }

    /// Marks a process as having GC probes (for probes attached after it
    /// was attached, e.g. once its libnode was mapped).
    pub fn set_gc_probed(&mut self, pid: u32) {
        if let Some(p) = self.processes.get_mut(&pid) {
            p.gc_probed = true;
        }
    }

    pub fn size(&self) -> ModelSize {
        ModelSize {
            live_processes: self.processes.len(),
            retired_kept: self.retired.len(),
            groups: self.groups.len(),
        }
    }

    fn grouped(&self) -> bool {
        self.cfg.group_all || self.groups.values().any(|g| g.container.is_some())
    }

    /// One snapshot per live process, as of `now_ns`; grouped under one
    /// `container` record per group when grouping applies.
    pub fn snapshots(&mut self, now_ns: u64, out: &mut Vec<Record>) {
        self.observe_time(now_ns);
        let ts = self.wall(now_ns);
        let mut by_group: BTreeMap<&str, Vec<&ProcessState>> = BTreeMap::new();
        for p in self.processes.values() {
            by_group.entry(p.group.as_str()).or_default().push(p);
        }
        let grouped = self.grouped();
        for (key, mut members) in by_group {
            // The fastest growers first: what a person scans for.
            members.sort_by_key(|p| (std::cmp::Reverse(p.rss_growth()), p.pid));
            if let Some(g) = self.groups.get(key).filter(|g| grouped || g.container.is_some()) {
                out.push(Record::Container(container_snapshot(g, &members, ts)));
            }
            for p in members {
                out.push(Record::Snapshot(snapshot(p, ts)));
            }
        }
    }

    /// The final record: every live process, the latest exited ones, and
    /// every group, with growth attributed and one sentence of findings.
    pub fn summary(&self, now_ns: u64) -> Record {
        let now_ns = now_ns.max(self.now_ns);
        let mut processes: Vec<ProcessSummary> = self.retired.iter().cloned().collect();
        processes.extend(self.processes.values().map(|p| process_summary(p, now_ns)));
        let grouped = self.grouped();
        let containers = self
            .groups
            .values()
            .filter(|g| grouped || g.container.is_some())
            .map(|g| {
                let members: Vec<&ProcessState> =
                    self.processes.values().filter(|p| p.group == g.cgroup_path).collect();
                let snap = container_snapshot(g, &members, self.wall(now_ns));
                ContainerSummary {
                    snapshot: snap,
                    minor: g.gc.quantiles(GcKind::Minor),
                    major: g.gc.quantiles(GcKind::Major),
                }
            })
            .collect();
        Record::Summary(Summary {
            ts: self.wall(now_ns),
            duration_s: now_ns.saturating_sub(self.start_ns.unwrap_or(now_ns)) as f64 / 1e9,
            mem_hook: self.cfg.mem_hook.clone(),
            dropped_events: self.kernel_drops + self.undecodable,
            exited_processes: self.exited_total,
            processes_not_listed: self.exited_total.saturating_sub(self.retired.len() as u64),
            state: self.size(),
            containers,
            processes,
        })
    }
}

/// An `oom` record: `sizes` as the kernel reported them at the kill, or,
/// for V8's own out-of-memory, as last sampled.
fn oom_record(p: &ProcessState, ts: f64, source: &'static str, sizes: ProcStatus) -> Oom {
    Oom {
        ts,
        pid: p.pid,
        comm: p.comm.clone(),
        source,
        anon_rss_bytes: sizes.rss_anon,
        file_rss_bytes: sizes.rss_file,
        shmem_rss_bytes: sizes.rss_shmem,
        vm_bytes: sizes.vm_size,
        cgroup_id: p.cgroup_id,
        container: p.container.clone(),
    }
}

fn snapshot(p: &ProcessState, ts: f64) -> Snapshot {
    let t = p.space.totals();
    let base = &p.baseline;
    Snapshot {
        ts,
        pid: p.pid,
        comm: p.comm.clone(),
        rss_bytes: p.status.rss(),
        rss_anon_bytes: p.status.rss_anon,
        rss_file_bytes: p.status.rss_file,
        rss_shmem_bytes: p.status.rss_shmem,
        vm_bytes: p.status.vm_size,
        mapped_bytes: t.mapped,
        mapped_anon_bytes: t.mapped_anon(),
        mapped_file_bytes: t.mapped_file,
        committed_bytes: t.committed,
        brk_bytes: p.brk_bytes(),
        calls: p.calls,
        rss_growth_bytes: p.rss_growth(),
        rss_growth_bytes_per_s: p.rss_growth_per_s(),
        mapped_growth_bytes: delta(t.mapped, base.totals.mapped),
        committed_growth_bytes: delta(t.committed, base.totals.committed),
        brk_growth_bytes: delta(p.brk_bytes(), base.brk_bytes),
        cgroup_id: p.cgroup_id,
        container: p.container.clone(),
        ns_pid: p.ns_pid,
        gc_count: p.gc.count,
        gc_pause_ns: p.gc.total_pause_ns,
        marking_steps: p.gc_work.marking_steps,
        marking_step_ns: p.gc_work.marking_step_ns,
        weak_callbacks: p.gc_work.weak_callbacks,
        weak_callback_ns: p.gc_work.weak_callback_ns,
        heap_after_last_major_bytes: p.gc.heap_after_last_major,
        heap_limit_bytes: p.heap_limit_bytes,
    }
}

fn container_snapshot(g: &Group, members: &[&ProcessState], ts: f64) -> ContainerSnapshot {
    let usage = g.memory.as_ref().map(|m| m.usage_bytes);
    let limit = g.memory.as_ref().and_then(|m| m.limit_bytes);
    ContainerSnapshot {
        ts,
        cgroup_path: g.cgroup_path.clone(),
        cgroup_id: g.cgroup_id,
        container: g.container.clone(),
        processes: members.len(),
        exited_processes: g.exited_processes,
        rss_bytes: members.iter().map(|p| p.status.rss()).sum(),
        rss_growth_bytes: members.iter().map(|p| p.rss_growth()).sum(),
        committed_growth_bytes: members
            .iter()
            .map(|p| delta(p.space.totals().committed, p.baseline.totals.committed))
            .sum(),
        memory_usage_bytes: usage,
        memory_usage_growth_bytes: usage.zip(g.first_usage).map(|(now, first)| delta(now, first)),
        memory_limit_bytes: limit,
        memory_headroom_bytes: usage.zip(limit).map(|(u, l)| l.saturating_sub(u)),
        memory_source: g.memory.as_ref().map(|m| m.source.clone()),
        gc_count: g.gc.count,
        gc_pause_ns: g.gc.total_pause_ns,
    }
}

fn large_mapping(op: &MemOp, threshold: u64) -> Option<LargeMapping> {
    use super::input::map_flags;
    let (op_name, addr, len, prot, flags) = match *op {
        MemOp::Mmap { addr, len, prot, flags, .. } => ("mmap", addr, len, Some(prot), flags),
        MemOp::Munmap { addr, len } => ("munmap", addr, len, None, 0),
        MemOp::Mremap { new_addr, new_len, flags, .. } => ("mremap", new_addr, new_len, None, flags),
        MemOp::Brk { .. } | MemOp::Mprotect { .. } => return None,
    };
    if len < threshold {
        return None;
    }
    let is_mmap = matches!(op, MemOp::Mmap { .. });
    Some(LargeMapping {
        ts: 0.0,
        pid: 0,
        tid: 0,
        op: op_name,
        addr,
        len,
        prot: prot.map_or_else(String::new, |p| prot_string(p, flags & map_flags::SHARED != 0)),
        flags,
        backing: if !is_mmap {
            ""
        } else if flags & map_flags::ANONYMOUS != 0 {
            "anon"
        } else {
            "file"
        },
        cgroup_id: 0,
    })
}

/// `rw-p` as in /proc/PID/maps.
pub fn prot_string(prot: u32, shared: bool) -> String {
    use super::address_space::prot as p;
    let bit = |b, c| if prot & b != 0 { c } else { '-' };
    [bit(p::READ, 'r'), bit(p::WRITE, 'w'), bit(p::EXEC, 'x'), if shared { 's' } else { 'p' }]
        .iter()
        .collect()
}

fn process_summary(p: &ProcessState, now_ns: u64) -> ProcessSummary {
    let t = p.space.totals();
    let base = &p.baseline;
    let chunks = p.space.chunks();
    let now_classes = chunk_classes(&chunks);
    let mut growth_by_chunk_size: Vec<ChunkClassGrowth> = base
        .chunk_classes
        .keys()
        .chain(now_classes.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|&class| {
            let now = now_classes.get(&class).copied().unwrap_or_default();
            let then = base.chunk_classes.get(&class).copied().unwrap_or_default();
            ChunkClassGrowth {
                chunk_size_bytes: class,
                chunks_delta: delta(now.chunks, then.chunks),
                committed_delta_bytes: delta(now.committed, then.committed),
            }
        })
        .filter(|g| g.chunks_delta != 0 || g.committed_delta_bytes != 0)
        .collect();
    growth_by_chunk_size.sort_by_key(|g| std::cmp::Reverse(g.committed_delta_bytes.abs()));

    let mut s = ProcessSummary {
        pid: p.pid,
        comm: p.comm.clone(),
        container: p.container.clone(),
        ns_pid: p.ns_pid,
        cgroup_id: p.cgroup_id,
        origin: p.origin,
        traced_s: p.seconds_traced(now_ns),
        exited: p.exited_ns.is_some(),
        v8_out_of_memory: p.v8_oom,
        replaced_by_exec: false,
        oom_killed: p.oom_killed,
        rss_start_bytes: base.status.rss(),
        rss_end_bytes: p.status.rss(),
        rss_growth_bytes: p.rss_growth(),
        rss_growth_bytes_per_s: p.rss_growth_per_s(),
        rss_anon_growth_bytes: delta(p.status.rss_anon, base.status.rss_anon),
        rss_file_growth_bytes: delta(p.status.rss_file, base.status.rss_file),
        rss_shmem_growth_bytes: delta(p.status.rss_shmem, base.status.rss_shmem),
        mapped_growth_bytes: delta(t.mapped, base.totals.mapped),
        mapped_anon_growth_bytes: delta(t.mapped_anon(), base.totals.mapped_anon()),
        mapped_file_growth_bytes: delta(t.mapped_file, base.totals.mapped_file),
        committed_growth_bytes: delta(t.committed, base.totals.committed),
        brk_growth_bytes: delta(p.brk_bytes(), base.brk_bytes),
        mapped_bytes: t.mapped,
        committed_bytes: t.committed,
        brk_bytes: p.brk_bytes(),
        calls: p.calls,
        large_mappings: p.large_mappings,
        growth_by_chunk_size,
        largest_mappings: chunks
            .iter()
            .take(LARGEST_MAPPINGS)
            .map(|c| LiveMapping {
                addr: c.start,
                len: c.len,
                committed_bytes: c.committed,
                backing: if c.file { "file" } else { "anon" },
                shared: c.shared,
            })
            .collect(),
        gc: p.gc_probed.then(|| gc_summary(p, now_ns)),
        finding: String::new(),
    };
    s.finding = finding(&s, delta(t.committed_anon, base.totals.committed_anon));
    s
}

fn gc_summary(p: &ProcessState, now_ns: u64) -> GcSummary {
    let g = &p.gc;
    let traced_s = p.seconds_traced(now_ns);
    GcSummary {
        count: g.count,
        minor: g.quantiles(GcKind::Minor),
        major: g.quantiles(GcKind::Major),
        total_pause_ms: g.total_pause_ns as f64 / 1e6,
        pause_time_share: if traced_s > 0.0 { g.total_pause_ns as f64 / 1e9 / traced_s } else { 0.0 },
        gcs_per_s: if traced_s > 0.0 { g.count as f64 / traced_s } else { 0.0 },
        heap_after_last_major_bytes: g.heap_after_last_major,
        reclaimed_bytes: g.reclaimed_bytes,
        marking_steps: p.gc_work.marking_steps,
        marking_step_ms: p.gc_work.marking_step_ns as f64 / 1e6,
        marking_starts: p.gc_work.marking_starts,
        marking_start_ms: p.gc_work.marking_start_ns as f64 / 1e6,
        weak_callbacks: p.gc_work.weak_callbacks,
        weak_callback_ms: p.gc_work.weak_callback_ns as f64 / 1e6,
        main_thread_share: if traced_s > 0.0 {
            (g.total_pause_ns
                + p.gc_work.marking_step_ns
                + p.gc_work.marking_start_ns
                + p.gc_work.weak_callback_ns) as f64
                / 1e9
                / traced_s
        } else {
            0.0
        },
    }
}

/// One sentence: how much RSS moved, and where it went.
fn finding(s: &ProcessSummary, committed_anon_growth: i64) -> String {
    let rss = s.rss_growth_bytes;
    let noise = (1 << 20).max(s.rss_start_bytes as i64 / 100);
    let mut text = if rss.abs() < noise {
        format!(
            "RSS steady at {} ({} over {:.0} s).",
            fmt_bytes(s.rss_end_bytes as f64),
            fmt_delta(rss),
            s.traced_s
        )
    } else {
        format!(
            "RSS {} {} in {:.0} s ({}/s): anon {}, file {}, shmem {}.",
            if rss > 0 { "grew" } else { "shrank" },
            fmt_bytes(rss.unsigned_abs() as f64),
            s.traced_s,
            fmt_delta(s.rss_growth_bytes_per_s as i64),
            fmt_delta(s.rss_anon_growth_bytes),
            fmt_delta(s.rss_file_growth_bytes),
            fmt_delta(s.rss_shmem_growth_bytes),
        )
    };

    let mut parts = Vec::new();
    if committed_anon_growth.abs() >= noise {
        let mut part = format!("committed anonymous mmap memory {}", fmt_delta(committed_anon_growth));
        if let Some(top) = s
            .growth_by_chunk_size
            .first()
            .filter(|g| g.committed_delta_bytes.signum() == committed_anon_growth.signum())
        {
            part += &format!(
                ", mostly in {} chunks ({} {})",
                fmt_size_class(top.chunk_size_bytes),
                if top.chunks_delta >= 0 { "+" } else { "" }.to_owned() + &top.chunks_delta.to_string(),
                if top.chunks_delta.abs() == 1 { "chunk" } else { "chunks" },
            );
        }
        parts.push((committed_anon_growth.abs(), part));
    }
    if s.mapped_file_growth_bytes.abs() >= noise {
        parts.push((
            s.mapped_file_growth_bytes.abs(),
            format!("file mappings {}", fmt_delta(s.mapped_file_growth_bytes)),
        ));
    }
    if s.brk_growth_bytes.abs() >= noise {
        parts.push((
            s.brk_growth_bytes.abs(),
            format!("brk heap (malloc's main arena) {}", fmt_delta(s.brk_growth_bytes)),
        ));
    }
    parts.sort_by_key(|(size, _)| std::cmp::Reverse(*size));
    if !parts.is_empty() {
        let joined: Vec<String> = parts.into_iter().map(|(_, p)| p).collect();
        let mut sentence = joined.join("; ");
        if let Some(first) = sentence.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        text += &format!(" {sentence}.");
    } else if rss >= noise {
        text += " No matching growth in mappings: pages were touched in memory that was already mapped \
                 (a heap filling space it had reserved).";
    }
    if s.v8_out_of_memory {
        text += " V8 ran out of heap (JavaScript heap out of memory) and aborted it.";
    }
    if s.oom_killed {
        text += " The kernel OOM killer ended it.";
    }
    text
}
