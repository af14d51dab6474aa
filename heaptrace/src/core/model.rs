//! The aggregation model: inputs in, records out. No I/O.
//!
//! [`Model::apply`] takes one [`Input`] and hands each kind to its handler;
//! the records they cause are built in [`super::report`], and the words of
//! the findings in [`super::findings`].
//!
//! State is bounded whatever the churn: a process that exits is folded into
//! its group's totals and kept only as a summary, and at most
//! [`RETIRED_KEPT`] such summaries (the latest) are kept. Groups (a
//! container, or any other cgroup) with no live process are dropped oldest
//! first beyond [`IDLE_GROUPS_KEPT`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{
    container::parse_cgroup_path,
    death, diagnose,
    gc::{GcKind, collector_name, reason_name},
    group::Group,
    input::{
        CgroupSample, Event, EventKind, GcPause, GcWork, Input, MemHook, MemOp, ProcStatus, ProcessInfo,
        Sample,
    },
    process::ProcessState,
    record::{
        Attached, DropReason, Dropped, Exit, Gc, GroupSummary, LargeMapping, ModelSize, OomSource,
        ProcessSummary, Record, Summary,
    },
    report::{group_snapshot, large_mapping, oom_record, process_summary, snapshot},
};
use crate::core::input::CallCounts;

/// Summaries of exited processes kept for the final summary (the latest).
pub const RETIRED_KEPT: usize = 64;

/// Groups without a live process kept (the most recently active).
pub const IDLE_GROUPS_KEPT: usize = 64;

/// How the model is set up; a recording keeps it, so that its replay
/// reads times and sizes as the live run did.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelConfig {
    pub page_size: u64,
    /// mmap/mremap/munmap at or above this size become `mapping` records.
    pub large_threshold: u64,
    /// Unix time minus CLOCK_MONOTONIC, in ns: turns kernel timestamps into
    /// wall-clock times for output.
    pub wall_offset_ns: i64,
    /// The memory-syscall hook in use, for the summary.
    pub mem_hook: MemHook,
    /// Emit a `group` record per group each interval even for groups that
    /// are not containers (host-wide and cgroup selections).
    pub group_all: bool,
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
            Input::Attach(info) => self.attach(*info, out),
            Input::Event(event) => self.apply_event(event, out),
            Input::Sample(sample) => self.apply_sample(sample, out),
            Input::Drops { ts_ns, kernel, undecodable } => self.apply_drops(ts_ns, kernel, undecodable, out),
            Input::Cgroup(sample) => self.apply_cgroup(sample),
            Input::GcProbesAttached { pid, ts_ns } => {
                self.observe_time(ts_ns);
                if let Some(p) = self.processes.get_mut(&pid) {
                    p.gc_probed = true;
                }
            }
            Input::Stack { pid, id, frames } => {
                if let Some(p) = self.processes.get_mut(&pid) {
                    p.sites.define(id, frames);
                }
            }
            Input::Heap(report) => {
                if let Some(p) = self.processes.get_mut(&report.pid) {
                    p.diagnosis.heap = Some(report.clone());
                }
                out.push(Record::Heap(*report));
            }
            Input::HeapLimit { pid, ts_ns, bytes, old_generation_bytes } => {
                self.observe_time(ts_ns);
                if let Some(p) = self.processes.get_mut(&pid) {
                    p.v8_heap_limit = Some(bytes);
                    p.v8_old_generation_limit = old_generation_bytes;
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
        let group = self
            .groups
            .entry(key.clone())
            .or_insert_with(|| Group::new(key.clone(), info.cgroup_id, container.clone(), ts_ns));
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
    /// keeps the totals. `exited`: it ended (else it exec'd another program).
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
        let busy: BTreeSet<&str> = self.processes.values().map(|p| p.group.as_str()).collect();
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

    /// One handler per event kind.
    fn apply_event(&mut self, event: Event, out: &mut Vec<Record>) {
        self.observe_time(event.ts_ns);
        let Event { pid, tid, ts_ns, cgroup_id, kind } = event;
        match kind {
            EventKind::Exit { calls, gc_work, exit_code } => {
                self.on_exit(pid, ts_ns, calls, gc_work, exit_code, out)
            }
            EventKind::Exec { traced, was_traced, .. } => self.on_exec(pid, ts_ns, traced, was_traced, out),
            EventKind::Fork { parent_pid, .. } => self.on_fork(pid, parent_pid, ts_ns, out),
            EventKind::Mem { op, stack } => self.on_mem(pid, tid, ts_ns, cgroup_id, &op, stack, out),
            EventKind::Gc(pause) => self.on_gc(pid, tid, ts_ns, cgroup_id, &pause, out),
            EventKind::OomVictim { anon_rss, file_rss, shmem_rss, total_vm } => {
                let sizes = ProcStatus {
                    vm_size: total_vm,
                    rss_anon: anon_rss,
                    rss_file: file_rss,
                    rss_shmem: shmem_rss,
                };
                // The record is stamped with the cgroup of the task that
                // caused the kill, which need not be the victim's: not used.
                let _ = cgroup_id;
                self.on_oom_victim(pid, ts_ns, sizes, out);
            }
            EventKind::V8OutOfMemory { memory } => {
                self.on_v8_out_of_memory(pid, ts_ns, cgroup_id, memory, out)
            }
            EventKind::FatalSignal { signal, memory } => {
                if let Some(p) = self.live(pid, cgroup_id) {
                    p.diagnosis.fatal_signal.get_or_insert(signal);
                    if p.diagnosis.memory_at_death.is_none() {
                        p.diagnosis.memory_at_death = memory;
                    }
                }
            }
        }
    }

    /// The live process an event is about. Events of a process not (or no
    /// longer) attached are ignored: the kernel filter makes that rare (a
    /// race with detach). The event's cgroup id is the process's latest.
    fn live(&mut self, pid: u32, cgroup_id: u64) -> Option<&mut ProcessState> {
        let p = self.processes.get_mut(&pid)?;
        if cgroup_id != 0 {
            p.cgroup_id = cgroup_id;
        }
        Some(p)
    }

    /// The last thread exited; the kernel's final counters come with it.
    fn on_exit(
        &mut self,
        pid: u32,
        ts_ns: u64,
        calls: CallCounts,
        gc_work: GcWork,
        exit_code: Option<i32>,
        out: &mut Vec<Record>,
    ) {
        let ts = self.wall(ts_ns);
        let Some(p) = self.processes.get_mut(&pid) else { return };
        p.calls = calls;
        p.gc_work = gc_work;
        if let Some((cause, signal)) = death::cause(p, exit_code) {
            p.diagnosis.death = Some(cause);
            let p = &self.processes[&pid];
            let record = death::death(p, self.groups.get(&p.group), cause, signal, ts);
            let explanation = record.explanation.clone();
            out.push(Record::Death(record));
            if let Some(p) = self.processes.get_mut(&pid) {
                p.diagnosis.death_explanation = Some(explanation);
            }
        }
        self.retire(pid, ts_ns, true, out);
    }

    /// A traced process that left the selection by exec'ing another
    /// program is retired; a re-selected one is attached again by the
    /// collector, which retires the old image then.
    fn on_exec(&mut self, pid: u32, ts_ns: u64, traced: bool, was_traced: bool, out: &mut Vec<Record>) {
        if was_traced && !traced {
            self.retire(pid, ts_ns, false, out);
        }
    }

    /// A fork copies the parent's address space: the child starts as a copy
    /// of the parent's state, exactly, even if it is gone already.
    fn on_fork(&mut self, pid: u32, parent_pid: u32, ts_ns: u64, out: &mut Vec<Record>) {
        if let Some(parent) = self.processes.get(&parent_pid)
            && !self.processes.contains_key(&pid)
        {
            let child = parent.fork_child(pid, ts_ns);
            self.add(child, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_mem(
        &mut self,
        pid: u32,
        tid: u32,
        ts_ns: u64,
        cgroup_id: u64,
        op: &MemOp,
        stack: Option<u64>,
        out: &mut Vec<Record>,
    ) {
        let threshold = self.cfg.large_threshold;
        let ts = self.wall(ts_ns);
        let Some(p) = self.live(pid, cgroup_id) else { return };
        if let Some(large) = large_mapping(op, threshold) {
            p.large_mappings += 1;
            let site = stack.and_then(|id| p.sites.headline_of(id));
            let large = LargeMapping { ts, pid, tid, cgroup_id: p.cgroup_id, site, ..large };
            diagnose::large_mapping(p, &large);
            out.push(Record::Mapping(large));
        }
        p.apply(op, stack);
    }

    fn on_gc(
        &mut self,
        pid: u32,
        tid: u32,
        ts_ns: u64,
        cgroup_id: u64,
        pause: &GcPause,
        out: &mut Vec<Record>,
    ) {
        let ts = self.wall(ts_ns);
        let Some(p) = self.live(pid, cgroup_id) else { return };
        p.gc.record(pause);
        let collector = collector_name(pause.collector, pause.v8_timestamps);
        let reason = reason_name(pause.reason);
        diagnose::gc(p, tid, ts_ns, ts, pause, collector, reason);
        out.push(Record::Gc(Gc {
            ts,
            pid,
            tid,
            kind: GcKind::of(pause.collector),
            collector,
            reason,
            pause_ns: pause.pause_ns,
            heap_before_bytes: pause.heap_before,
            heap_after_bytes: pause.heap_after,
            marking_steps: pause.marking_steps,
            marking_step_ns: pause.marking_step_ns,
            marking_start_ns: pause.marking_start_ns,
            cgroup_id: p.cgroup_id,
            container: p.container.clone(),
        }));
        let group = p.group.clone();
        if let Some(g) = self.groups.get_mut(&group) {
            g.gc.record(pause);
        }
    }

    /// The kernel's OOM killer chose it; `sizes` are the kernel's, at the kill.
    fn on_oom_victim(&mut self, pid: u32, ts_ns: u64, sizes: ProcStatus, out: &mut Vec<Record>) {
        let ts = self.wall(ts_ns);
        let Some(p) = self.live(pid, 0) else { return };
        p.oom_killed = true;
        p.diagnosis.memory_at_death.get_or_insert(sizes);
        out.push(Record::Oom(oom_record(p, ts, OomSource::Kernel, sizes)));
    }

    /// V8 gave up for lack of heap. Counted once: one fatal-OOM overload
    /// may call another.
    fn on_v8_out_of_memory(
        &mut self,
        pid: u32,
        ts_ns: u64,
        cgroup_id: u64,
        memory: Option<ProcStatus>,
        out: &mut Vec<Record>,
    ) {
        let ts = self.wall(ts_ns);
        let Some(p) = self.live(pid, cgroup_id) else { return };
        if !p.v8_oom {
            p.v8_oom = true;
            p.diagnosis.memory_at_death = memory;
            // The kernel's reading at the abort; the last sample only if it
            // had none (it can be seconds old and far off).
            out.push(Record::Oom(oom_record(p, ts, OomSource::V8, memory.unwrap_or(p.status))));
        }
    }

    fn apply_sample(&mut self, sample: Sample, out: &mut Vec<Record>) {
        self.observe_time(sample.ts_ns);
        let ts = self.wall(sample.ts_ns);
        let Some(p) = self.processes.get_mut(&sample.pid) else { return };
        p.calls = sample.calls;
        if let Some(work) = sample.gc_work {
            p.gc_work = work;
        }
        if let Some(status) = sample.status {
            p.status = status;
            p.last_sample_ns = sample.ts_ns;
            diagnose::sampled(p, self.groups.get(&p.group), sample.ts_ns, ts, out);
        }
    }

    /// The kernel's running total of lost events and the undecodable count:
    /// a `dropped` record for each that grew.
    fn apply_drops(&mut self, ts_ns: u64, kernel: u64, undecodable: u64, out: &mut Vec<Record>) {
        self.observe_time(ts_ns);
        let ts = self.wall(ts_ns);
        let total = kernel + undecodable;
        for (new, old, reason) in [
            (kernel, self.kernel_drops, DropReason::RingBufferFull),
            (undecodable, self.undecodable, DropReason::Undecodable),
        ] {
            if new > old {
                out.push(Record::Dropped(Dropped { ts, count: new - old, total, reason }));
            }
        }
        self.kernel_drops = self.kernel_drops.max(kernel);
        self.undecodable = self.undecodable.max(undecodable);
    }

    fn apply_cgroup(&mut self, sample: CgroupSample) {
        self.observe_time(sample.ts_ns);
        if let Some(g) = self.groups.get_mut(&sample.cgroup_path) {
            g.observe_memory(sample);
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
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

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

    pub fn size(&self) -> ModelSize {
        ModelSize {
            live_processes: self.processes.len(),
            retired_kept: self.retired.len(),
            groups: self.groups.len(),
        }
    }

    /// Whether groups get records: with a selection (host-wide or cgroup),
    /// or once any group is a container.
    fn grouped(&self) -> bool {
        self.cfg.group_all || self.groups.values().any(|g| g.container.is_some())
    }

    /// One snapshot per live process, as of `now_ns`; grouped under one
    /// `group` record per group when grouping applies.
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
            if let Some(g) = self.groups.get_mut(key).filter(|_| grouped) {
                let container = g.container.clone();
                diagnose::judge_group(g, &members, ts, container.as_ref(), out);
                out.push(Record::Group(group_snapshot(g, &members, ts)));
            }
            for p in members {
                out.push(Record::Snapshot(snapshot(p, ts)));
            }
        }
        for p in self.processes.values_mut() {
            out.extend(diagnose::take_mappings(p, ts));
        }
    }

    /// The final record: every live process, the latest exited ones, and
    /// every group, with growth attributed and one sentence of findings.
    pub fn summary(&self, now_ns: u64) -> Record {
        let now_ns = now_ns.max(self.now_ns);
        let mut processes: Vec<ProcessSummary> = self.retired.iter().cloned().collect();
        processes.extend(self.processes.values().map(|p| process_summary(p, now_ns)));
        let groups = self
            .groups
            .values()
            .filter(|_| self.grouped())
            .map(|g| {
                let members: Vec<&ProcessState> =
                    self.processes.values().filter(|p| p.group == g.cgroup_path).collect();
                GroupSummary {
                    snapshot: group_snapshot(g, &members, self.wall(now_ns)),
                    minor: g.gc.quantiles(GcKind::Minor),
                    major: g.gc.quantiles(GcKind::Major),
                }
            })
            .collect();
        Record::Summary(Summary {
            ts: self.wall(now_ns),
            duration_s: now_ns.saturating_sub(self.start_ns.unwrap_or(now_ns)) as f64 / 1e9,
            mem_hook: self.cfg.mem_hook,
            dropped_events: self.kernel_drops + self.undecodable,
            exited_processes: self.exited_total,
            processes_not_listed: self.exited_total.saturating_sub(self.retired.len() as u64),
            state: self.size(),
            groups,
            processes,
        })
    }
}
