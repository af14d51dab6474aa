//! State of one traced process.

use std::collections::BTreeMap;

use super::{
    address_space::{AddressSpace, Chunk, Region, Totals},
    input::{CallCounts, MemOp, ProcStatus, ProcessInfo, map_flags},
};

pub struct ProcessState {
    pub pid: u32,
    pub comm: String,
    pub attached_ns: u64,
    pub space: AddressSpace,
    pub start_brk: u64,
    pub brk: u64,
    pub page_size: u64,
    /// At attach, for growth figures.
    pub baseline: Baseline,
    /// Latest readings.
    pub status: ProcStatus,
    pub calls: CallCounts,
    pub last_sample_ns: u64,
    pub cgroup_id: u64,
    pub large_mappings: u64,
    pub exited_ns: Option<u64>,
    pub oom_killed: bool,
    pub container: Option<super::container::ContainerRef>,
    pub ns_pid: Option<u32>,
    pub gc: super::gc::GcStats,
    /// GC work outside pauses, from the kernel's totals.
    pub gc_work: super::input::GcWork,
    /// Whether GC probes are attached (set by the collector when it knows).
    pub gc_probed: bool,
    /// Key of its group: the v2 cgroup path ("" if unknown).
    pub group: String,
    pub origin: super::input::Origin,
    /// `--max-old-space-size`, when given.
    pub max_old_space_bytes: Option<u64>,
    /// V8's heap limit, read from the process (see `crate::v8::limit`).
    pub v8_heap_limit: Option<u64>,
    /// Its old generation's part: where the JS heap's floor runs out.
    pub v8_old_generation_limit: Option<u64>,
    /// V8 reported running out of heap.
    pub v8_oom: bool,
    /// Its verdict, what it rests on, its flight recorder, how it died.
    pub diagnosis: Diagnosis,
    /// Where its memory comes from, by stack.
    pub sites: super::sites::SiteTable,
}

/// A process's diagnosis: fresh at attach, and for a forked child.
pub struct Diagnosis {
    pub verdict: super::verdict::Verdict,
    /// What the verdict rests on.
    pub evidence: super::verdict::Evidence,
    pub recorder: super::recorder::FlightRecorder,
    /// Native memory at the latest sample (see `report::native_bytes`).
    pub native_bytes: u64,
    /// Large mappings of the current interval.
    pub interval_mappings: super::diagnose::MappingTally,
    /// Memory read in the kernel when it began to die (V8's abort, the OOM
    /// kill, a fatal signal).
    pub memory_at_death: Option<ProcStatus>,
    /// The fatal signal being delivered to it, if one was.
    pub fatal_signal: Option<u32>,
    /// How it died, once it has, and the death record's sentence.
    pub death: Option<super::record::DeathCause>,
    pub death_explanation: Option<String>,
    /// When the allocation sites' growth window last moved on.
    pub sites_marked_ns: u64,
    /// What `--on-leak` found in its JS heap, the latest.
    pub heap: Option<Box<crate::heap::HeapReport>>,
}

impl Default for Diagnosis {
    fn default() -> Self {
        Self {
            verdict: super::verdict::Verdict::unknown("just attached"),
            evidence: Default::default(),
            recorder: Default::default(),
            native_bytes: 0,
            interval_mappings: Default::default(),
            memory_at_death: None,
            fatal_signal: None,
            death: None,
            death_explanation: None,
            sites_marked_ns: 0,
            heap: None,
        }
    }
}

pub struct Baseline {
    pub status: ProcStatus,
    pub totals: Totals,
    pub brk_bytes: u64,
    pub chunk_classes: BTreeMap<u64, ClassTotals>,
}

/// Chunks of one power-of-two size class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassTotals {
    pub chunks: u64,
    pub committed: u64,
}

impl ProcessState {
    pub fn new(info: ProcessInfo, page_size: u64) -> Self {
        let mut space = AddressSpace::new(page_size);
        for m in &info.mappings {
            let region = Region { prot: m.prot, file: m.file, shared: m.shared, origin: m.start };
            // Saturating: a recording from elsewhere may say anything.
            space.map(m.start, m.end.saturating_sub(m.start), region);
        }
        let mut state = Self {
            container: None,
            group: info.cgroup_path.clone().unwrap_or_default(),
            origin: info.origin,
            max_old_space_bytes: info.max_old_space_bytes,
            v8_heap_limit: None,
            v8_old_generation_limit: None,
            v8_oom: false,
            diagnosis: Diagnosis::default(),
            sites: super::sites::SiteTable::with_brk(info.brk),
            ns_pid: info.ns_pid,
            pid: info.pid,
            comm: info.comm,
            attached_ns: info.ts_ns,
            start_brk: info.start_brk,
            brk: info.brk,
            page_size,
            baseline: Baseline {
                status: info.status,
                totals: space.totals(),
                brk_bytes: 0,
                chunk_classes: chunk_classes(&space.chunks()),
            },
            space,
            status: info.status,
            calls: CallCounts::default(),
            last_sample_ns: info.ts_ns,
            cgroup_id: info.cgroup_id,
            large_mappings: 0,
            exited_ns: None,
            oom_killed: false,
            gc: Default::default(),
            gc_work: Default::default(),
            gc_probed: info.gc_probes,
        };
        state.baseline.brk_bytes = state.brk_bytes();
        state
    }

    /// The state of a child this process just forked: a copy of its address
    /// space and break, which is exactly what fork gives the child, so no
    /// read of the child's /proc (which may be gone already) is needed.
    pub fn fork_child(&self, pid: u32, ts_ns: u64) -> Self {
        let mut child = Self {
            pid,
            comm: self.comm.clone(),
            attached_ns: ts_ns,
            space: self.space.clone(),
            start_brk: self.start_brk,
            brk: self.brk,
            page_size: self.page_size,
            baseline: Baseline {
                status: self.status,
                totals: self.space.totals(),
                brk_bytes: 0,
                chunk_classes: chunk_classes(&self.space.chunks()),
            },
            status: self.status,
            calls: CallCounts::default(),
            last_sample_ns: ts_ns,
            cgroup_id: self.cgroup_id,
            large_mappings: 0,
            exited_ns: None,
            oom_killed: false,
            container: self.container.clone(),
            // Its own pid namespace id is not known without /proc.
            ns_pid: None,
            gc: Default::default(),
            gc_work: Default::default(),
            // The same binary: per-binary probes cover it as they cover the parent.
            gc_probed: self.gc_probed,
            group: self.group.clone(),
            origin: super::input::Origin::Fork,
            max_old_space_bytes: self.max_old_space_bytes,
            // The same heap configuration: a fork shares the parent's V8 flags.
            v8_heap_limit: self.v8_heap_limit,
            v8_old_generation_limit: self.v8_old_generation_limit,
            v8_oom: false,
            diagnosis: Diagnosis::default(),
            // Its allocations from here on; what the parent allocated before
            // the fork is the parent's story.
            sites: super::sites::SiteTable::with_brk(self.brk),
        };
        child.baseline.brk_bytes = child.brk_bytes();
        child
    }

    /// Size of the brk heap as the kernel maps it (whole pages).
    pub fn brk_bytes(&self) -> u64 {
        let end = self.brk.checked_next_multiple_of(self.page_size).unwrap_or(self.brk);
        end.saturating_sub(self.start_brk)
    }

    /// Applies a memory call to the address space and, by `stack`, to the
    /// allocation sites.
    pub fn apply(&mut self, op: &MemOp, stack: Option<u64>) {
        self.attribute(op, stack);
        match *op {
            MemOp::Mmap { addr, len, prot, flags, fd: _ } => {
                let region = Region {
                    prot,
                    file: flags & map_flags::ANONYMOUS == 0,
                    shared: flags & map_flags::SHARED != 0,
                    origin: addr,
                };
                self.space.map(addr, len, region);
            }
            MemOp::Munmap { addr, len } => self.space.unmap(addr, len),
            MemOp::Mremap { old_addr, old_len, new_addr, new_len, flags } => {
                let keep_old = flags & map_flags::MREMAP_DONTUNMAP != 0;
                self.space.remap(old_addr, old_len, new_addr, new_len, keep_old);
            }
            MemOp::Brk { brk } => self.brk = brk,
            MemOp::Mprotect { addr, len, prot } => self.space.protect(addr, len, prot),
        }
    }

    fn attribute(&mut self, op: &MemOp, stack: Option<u64>) {
        const PROT_WRITE: u32 = 2;
        let sites = &mut self.sites;
        match *op {
            MemOp::Mmap { addr, len, prot, flags, .. } => {
                let anonymous_data = flags & map_flags::ANONYMOUS != 0 && prot & PROT_WRITE != 0;
                sites.mapped(addr, len, stack.filter(|_| anonymous_data));
            }
            MemOp::Munmap { addr, len } => sites.unmapped(addr, len),
            MemOp::Mremap { old_addr, old_len, new_addr, new_len, .. } => {
                sites.remapped(old_addr, old_len, new_addr, new_len)
            }
            MemOp::Brk { brk } => sites.brk(brk, stack),
            MemOp::Mprotect { addr, len, prot } => {
                sites.protected(addr, len, prot & PROT_WRITE != 0, prot == 0, stack)
            }
        }
    }

    pub fn seconds_traced(&self, now_ns: u64) -> f64 {
        let end = self.exited_ns.unwrap_or(now_ns).max(self.last_sample_ns.min(now_ns));
        end.saturating_sub(self.attached_ns) as f64 / 1e9
    }

    pub fn rss_growth(&self) -> i64 {
        self.status.rss() as i64 - self.baseline.status.rss() as i64
    }

    /// RSS growth per second, over the span between attach and the last
    /// sample (the span the growth was measured over).
    pub fn rss_growth_per_s(&self) -> f64 {
        let span = self.last_sample_ns.saturating_sub(self.attached_ns) as f64 / 1e9;
        if span > 0.0 { self.rss_growth() as f64 / span } else { 0.0 }
    }
}

/// Live chunks per power-of-two size class.
pub fn chunk_classes(chunks: &[Chunk]) -> BTreeMap<u64, ClassTotals> {
    let mut classes: BTreeMap<u64, ClassTotals> = BTreeMap::new();
    for c in chunks {
        let class = 1u64 << (63 - c.len.max(1).leading_zeros());
        let t = classes.entry(class).or_default();
        t.chunks += 1;
        t.committed += c.committed;
    }
    classes
}

pub fn delta(now: u64, then: u64) -> i64 {
    now as i64 - then as i64
}
