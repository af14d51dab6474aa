//! Builders: the model's state turned into records (snapshots, group
//! records, summaries). Pure functions of the state they are given.

use std::collections::BTreeSet;

use super::{
    findings::{answer, death_words, finding},
    gc::GcKind,
    group::Group,
    input::{MemOp, ProcStatus, map_flags},
    process::{ProcessState, chunk_classes, delta},
    record::{
        Backing, ChunkClassGrowth, GcSummary, GroupSnapshot, LargeMapping, LiveMapping, MappingOp, Oom,
        OomSource, ProcessSummary, Snapshot,
    },
};

/// How many of the largest live mappings a summary lists.
const LARGEST_MAPPINGS: usize = 5;

/// Committed memory outside V8's heap chunks: the brk heap plus
/// anonymous private mappings that are not V8's (see
/// `AddressSpace::committed_split`, which walks the mappings: done once per
/// sample, and only for V8 processes). Without V8, all of it.
pub fn native_bytes(p: &ProcessState) -> u64 {
    if p.gc_probed {
        p.brk_bytes() + p.space.committed_split().other
    } else {
        p.brk_bytes() + p.space.totals().committed_anon
    }
}

/// An `oom` record: `sizes` as the kernel reported them at the kill, or,
/// for V8's own out-of-memory, as last sampled.
pub fn oom_record(p: &ProcessState, ts: f64, source: OomSource, sizes: ProcStatus) -> Oom {
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

pub fn snapshot(p: &ProcessState, ts: f64) -> Snapshot {
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
        v8_heap_limit_bytes: p.v8_heap_limit,
        v8_old_generation_limit_bytes: p.v8_old_generation_limit,
        native_bytes: p.diagnosis.native_bytes,
        verdict: p.diagnosis.verdict.clone(),
    }
}

/// A group's record: sums over its live `members`, and the cgroup's own
/// figures.
pub fn group_snapshot(g: &Group, members: &[&ProcessState], ts: f64) -> GroupSnapshot {
    let usage = g.memory.as_ref().map(|m| m.usage_bytes);
    let limit = g.memory.as_ref().and_then(|m| m.limit_bytes);
    GroupSnapshot {
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
        memory_source: g.memory.as_ref().map(|m| m.source),
        gc_count: g.gc.count,
        gc_pause_ns: g.gc.total_pause_ns,
        verdict: g.verdict.clone(),
    }
}

/// A `mapping` record for a call at or above `threshold`; the caller fills
/// in time, pid, tid and cgroup.
pub fn large_mapping(op: &MemOp, threshold: u64) -> Option<LargeMapping> {
    let (op_kind, addr, len, prot, flags) = match *op {
        MemOp::Mmap { addr, len, prot, flags, .. } => (MappingOp::Mmap, addr, len, Some(prot), flags),
        MemOp::Munmap { addr, len } => (MappingOp::Munmap, addr, len, None, 0),
        MemOp::Mremap { new_addr, new_len, flags, .. } => (MappingOp::Mremap, new_addr, new_len, None, flags),
        MemOp::Brk { .. } | MemOp::Mprotect { .. } => return None,
    };
    if len < threshold {
        return None;
    }
    let backing = (op_kind == MappingOp::Mmap).then_some(if flags & map_flags::ANONYMOUS != 0 {
        Backing::Anon
    } else {
        Backing::File
    });
    Some(LargeMapping {
        ts: 0.0,
        pid: 0,
        tid: 0,
        op: op_kind,
        addr,
        len,
        prot: prot.map_or_else(String::new, |p| prot_string(p, flags & map_flags::SHARED != 0)),
        flags,
        backing,
        cgroup_id: 0,
        site: None,
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

/// Change in committed bytes per chunk-size class since attach, largest
/// change first.
fn growth_by_chunk_size(p: &ProcessState) -> Vec<ChunkClassGrowth> {
    let base = &p.baseline.chunk_classes;
    let now = chunk_classes(&p.space.chunks());
    let mut growth: Vec<ChunkClassGrowth> = base
        .keys()
        .chain(now.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|&class| {
            let n = now.get(&class).copied().unwrap_or_default();
            let then = base.get(&class).copied().unwrap_or_default();
            ChunkClassGrowth {
                chunk_size_bytes: class,
                chunks_delta: delta(n.chunks, then.chunks),
                committed_delta_bytes: delta(n.committed, then.committed),
            }
        })
        .filter(|g| g.chunks_delta != 0 || g.committed_delta_bytes != 0)
        .collect();
    growth.sort_by_key(|g| std::cmp::Reverse(g.committed_delta_bytes.abs()));
    growth
}

/// A process's summary: growth attributed, and one sentence of findings.
pub fn process_summary(p: &ProcessState, now_ns: u64) -> ProcessSummary {
    let t = p.space.totals();
    let base = &p.baseline;
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
        death: p.diagnosis.death,
        verdict: p.diagnosis.verdict.clone(),
        v8_heap_limit_bytes: p.v8_heap_limit,
        v8_old_generation_limit_bytes: p.v8_old_generation_limit,
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
        growth_by_chunk_size: growth_by_chunk_size(p),
        largest_mappings: p
            .space
            .chunks()
            .iter()
            .take(LARGEST_MAPPINGS)
            .map(|c| LiveMapping {
                addr: c.start,
                len: c.len,
                committed_bytes: c.committed,
                backing: if c.file { Backing::File } else { Backing::Anon },
                shared: c.shared,
            })
            .collect(),
        gc: p.gc_probed.then(|| gc_summary(p, now_ns)),
        allocation_sites: p.sites.sites(),
        unnamed_stack_calls: p.sites.unnamed_calls,
        answer: String::new(),
        finding: String::new(),
    };
    s.finding = finding(&s, delta(t.committed_anon, base.totals.committed_anon));
    let died = p.diagnosis.death_explanation.as_deref().or(p.diagnosis.death.map(death_words));
    s.answer = answer(&s, died);
    s
}

fn gc_summary(p: &ProcessState, now_ns: u64) -> GcSummary {
    let g = &p.gc;
    let traced_s = p.seconds_traced(now_ns);
    let share = |ns: u64| if traced_s > 0.0 { ns as f64 / 1e9 / traced_s } else { 0.0 };
    let work = &p.gc_work;
    GcSummary {
        count: g.count,
        minor: g.quantiles(GcKind::Minor),
        major: g.quantiles(GcKind::Major),
        total_pause_ms: g.total_pause_ns as f64 / 1e6,
        pause_time_share: share(g.total_pause_ns),
        gcs_per_s: if traced_s > 0.0 { g.count as f64 / traced_s } else { 0.0 },
        heap_after_last_major_bytes: g.heap_after_last_major,
        reclaimed_bytes: g.reclaimed_bytes,
        marking_steps: work.marking_steps,
        marking_step_ms: work.marking_step_ns as f64 / 1e6,
        marking_starts: work.marking_starts,
        marking_start_ms: work.marking_start_ns as f64 / 1e6,
        weak_callbacks: work.weak_callbacks,
        weak_callback_ms: work.weak_callback_ns as f64 / 1e6,
        main_thread_share: share(
            g.total_pause_ns + work.marking_step_ns + work.marking_start_ns + work.weak_callback_ns,
        ),
    }
}
