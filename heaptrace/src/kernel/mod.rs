//! The kernel edge: loads heaptrace's BPF programs and attaches the ones
//! that are always on, manages the traced set, drains the ring buffer into
//! core events and reads the in-kernel counters. It also hands out uprobe
//! attachments by program name, for the V8 module to place; it knows
//! programs and maps, not V8. Nothing here aggregates; that is the core's job.

mod btf;
mod decode;
mod hooks;
mod preflight;

use std::{io, num::NonZeroU32, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{ProgramError, UProbe, uprobe::UProbeLinkId},
};
use heaptrace_common::{ProcCounters, StackTrace, cgroup_verdict, kernel_offsets, proc_flags, stack_stat};
use thiserror::Error;
use tokio::io::{Interest, unix::AsyncFd};

pub use decode::{DecodeError, decode};
pub use hooks::MemHookChoice;
pub use preflight::{PreflightError, tracepoint_field_offset};

use crate::core::{CallCounts, Event, MemHook, input::GcWork};

/// The kernel programs, built by build.rs from heaptrace-ebpf.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/heaptrace"));

/// Problems loading or talking to the kernel programs.
#[derive(Debug, Error)]
pub enum KernelError {
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    /// This binary was built without the kernel programs (AYA_BUILD_SKIP).
    #[error(
        "this heaptrace binary was built without its eBPF programs (AYA_BUILD_SKIP was set); \
         rebuild it after running scripts/setup.sh"
    )]
    StubObject,
    /// The object could not be loaded (maps, relocations).
    #[error("loading heaptrace's eBPF object failed: {0}")]
    Load(#[source] aya::EbpfError),
    /// A program or map that the code names is not in the object (a build
    /// of mismatched halves).
    #[error("{what} {name} is missing from heaptrace's eBPF object")]
    MissingFromObject { what: &'static str, name: &'static str },
    /// A program was refused (the verifier log is in the source) or could
    /// not be attached.
    #[error("eBPF program `{program}` could not be {action}: {source}")]
    Program {
        program: &'static str,
        action: &'static str,
        #[source]
        source: ProgramError,
    },
    /// No memory-syscall hook could be attached at all.
    #[error("no way to hook memory syscalls on this kernel: {0}")]
    NoMemHook(String),
    #[error("eBPF map operation failed: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("ring buffer: {0}")]
    Io(#[from] io::Error),
}

/// The kernel half of the selection (see heaptrace_common::select).
#[derive(Clone, Debug, Default)]
pub struct KernelSelection {
    pub bits: u32,
    /// Command names, at most 15 bytes each (the kernel's comm length).
    pub comms: Vec<String>,
}

/// What the kernel counted about user stacks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackStats {
    /// Stacks walked.
    pub captured: u64,
    /// Of those, stacks new to the stacks map.
    pub inserted: u64,
    /// Walks cut at heaptrace_common::MAX_STACK_FRAMES.
    pub truncated: u64,
    /// Walks that met no frame pointer at the syscall and scanned for a
    /// frame record, and those that found none.
    pub scanned: u64,
    pub scan_failed: u64,
}

/// Who a uprobe attachment fires for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UprobeScope {
    /// One process: other processes of the binary never trap.
    Process(NonZeroU32),
    /// Every process that runs the file, present and future; the programs
    /// filter on the traced set.
    AllProcesses,
}

/// One program attached at some offsets of one file; give it back to
/// [`Tracer::detach_uprobe`]. Dropped without that, it stays attached
/// until heaptrace exits.
#[derive(Debug)]
pub struct UprobeLink {
    program: &'static str,
    id: UProbeLinkId,
}

/// Loaded and attached programs plus handles to their maps.
pub struct Tracer {
    // Keeps programs and links alive; dropping it detaches everything.
    ebpf: Ebpf,
    traced: HashMap<MapData, u32, ProcCounters>,
    gc_totals: HashMap<MapData, u32, heaptrace_common::GcTotals>,
    drops: PerCpuArray<MapData, u64>,
    stacks: HashMap<MapData, u64, StackTrace>,
    stack_stats: PerCpuArray<MapData, u64>,
    ring: AsyncFd<RingBuf<MapData>>,
    cgroup_verdicts: HashMap<MapData, u64, u32>,
    mem_hook: MemHook,
    notes: Vec<String>,
    undecodable: u64,
    /// Records decoded so far.
    decoded: u64,
}

impl Tracer {
    /// Checks privileges and kernel features, loads the programs and
    /// attaches the memory hook and the lifecycle tracepoints. Must run
    /// inside a tokio runtime (the ring buffer is registered with its
    /// reactor).
    /// `stack_min_bytes`: the smallest mmap or mprotect that gets a user
    /// stack (brk growth always does); 0 turns stack capture off.
    pub fn load(
        choice: MemHookChoice,
        ring_buffer_bytes: u32,
        selection: &KernelSelection,
        stack_min_bytes: u64,
    ) -> Result<Self, KernelError> {
        preflight::check()?;
        if EBPF_OBJECT.is_empty() {
            return Err(KernelError::StubObject);
        }
        let mut notes = Vec::new();
        let group_dead_offset =
            tracepoint_field_offset("sched", "sched_process_exit", "group_dead").unwrap_or(0);
        if group_dead_offset == 0 {
            notes.push("sched_process_exit has no group_dead field: a process counts as exited when its main thread exits".into());
        }
        let offsets = btf::kernel_offsets(&mut notes);
        let signal_field = |field| tracepoint_field_offset("signal", "signal_deliver", field);
        let signal_fields = signal_field("sig").zip(signal_field("sa_handler"));
        let (sig_offset, handler_offset) = signal_fields.unwrap_or((8, 24));
        let mut ebpf = EbpfLoader::new()
            .override_global("EXIT_GROUP_DEAD_OFFSET", &group_dead_offset, true)
            .override_global("SELECT", &selection.bits, true)
            .override_global("KERNEL_OFFSETS", &offsets, true)
            .override_global("SIGNAL_DELIVER_SIG_OFFSET", &sig_offset, true)
            .override_global("SIGNAL_DELIVER_HANDLER_OFFSET", &handler_offset, true)
            .override_global("STACK_MIN_BYTES", &stack_min_bytes, true)
            .map_max_entries("EVENTS", ring_buffer_bytes)
            .load(EBPF_OBJECT)
            .map_err(KernelError::Load)?;

        let mem_hook = hooks::attach_mem_hook(&mut ebpf, choice, &mut notes)?;
        hooks::attach_tracepoint(&mut ebpf, "sched_process_exit", "sched", "sched_process_exit")?;
        // Exec and fork matter even for explicit pids (a traced process
        // that execs gets a new address space).
        hooks::attach_tracepoint(&mut ebpf, "sched_process_exec", "sched", "sched_process_exec")?;
        hooks::attach_tracepoint(&mut ebpf, "task_newtask", "task", "task_newtask")?;
        if let Err(e) = hooks::attach_tracepoint(&mut ebpf, "oom_mark_victim", "oom", "mark_victim") {
            notes.push(format!("OOM kills will not be reported: {e}"));
        }
        // Without signal_struct's offsets, the program cannot tell a kill
        // from the SIGKILL an exit_group sends the other threads.
        if signal_fields.is_none() {
            notes.push(
                "signal:signal_deliver has no sig/sa_handler fields: fatal signals will not be reported"
                    .into(),
            );
        } else if offsets.flags & kernel_offsets::SIGNAL != 0
            && let Err(e) = hooks::attach_tracepoint(&mut ebpf, "signal_deliver", "signal", "signal_deliver")
        {
            notes.push(format!("fatal signals will not be reported: {e}"));
        }

        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(KernelError::MissingFromObject { what: "map", name })
        };
        let traced = HashMap::try_from(take(&mut ebpf, "TRACED")?)?;
        let drops = PerCpuArray::try_from(take(&mut ebpf, "DROPS")?)?;
        let gc_totals = HashMap::try_from(take(&mut ebpf, "GC_TOTALS")?)?;
        let stacks = HashMap::try_from(take(&mut ebpf, "STACKS")?)?;
        let stack_stats = PerCpuArray::try_from(take(&mut ebpf, "STACK_STATS")?)?;
        let ring = RingBuf::try_from(take(&mut ebpf, "EVENTS")?)?;
        let mut comms = HashMap::try_from(take(&mut ebpf, "COMMS")?)?;
        for name in &selection.comms {
            comms.insert(&comm_key(name), &1, 0)?;
        }
        let cgroup_verdicts = HashMap::try_from(take(&mut ebpf, "CGROUP_VERDICT")?)?;
        // SAFETY: the RingBuf owns its map fd, which stays open and unchanged
        // until the RingBuf is dropped, and the AsyncFd owns the RingBuf.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| KernelError::Io(io::Error::other(e.to_string())))?;
        Ok(Self {
            ebpf,
            traced,
            gc_totals,
            drops,
            stacks,
            stack_stats,
            ring,
            cgroup_verdicts,
            mem_hook,
            notes,
            undecodable: 0,
            decoded: 0,
        })
    }

    /// Which memory-syscall hook is attached.
    pub fn mem_hook(&self) -> MemHook {
        self.mem_hook
    }

    /// Things worth knowing about how tracing runs on this kernel.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Adds a process to the in-kernel traced set. `follow`: it was
    /// selected (not named by pid), so its forked children follow it and
    /// it is checked against the selection again when it execs.
    pub fn trace(&mut self, pid: u32, follow: bool) -> Result<(), KernelError> {
        let counters =
            ProcCounters { flags: if follow { proc_flags::FOLLOW } else { 0 }, ..Default::default() };
        // BPF_NOEXIST: the kernel may have added it already (exec or fork
        // raced the scan), and its counters then run from that moment.
        /// `BPF_NOEXIST` (uapi/linux/bpf.h): insert only if absent.
        const BPF_NOEXIST: u64 = 1;
        match self.traced.insert(&pid, &counters, BPF_NOEXIST) {
            Ok(()) => Ok(()),
            Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a process from the traced set and its GC totals, as the
    /// kernel's exit program does for a process that exits. Probes attached
    /// for it are the V8 module's to detach.
    pub fn untrace(&mut self, pid: u32) {
        // Absent already (e.g. removed twice) is fine.
        let _ = self.traced.remove(&pid);
        let _ = self.gc_totals.remove(&pid);
    }

    /// Records whether processes of a cgroup are selected, for the exec
    /// program to apply without asking again.
    pub fn set_cgroup_verdict(&mut self, cgroup_id: u64, selected: bool) -> Result<(), KernelError> {
        let verdict = if selected { cgroup_verdict::SELECTED } else { cgroup_verdict::REJECTED };
        Ok(self.cgroup_verdicts.insert(&cgroup_id, &verdict, 0)?)
    }

    /// Loads uprobe programs of the object (each once; loading one again
    /// is a no-op).
    pub fn load_uprobes(&mut self, programs: &[&'static str]) -> Result<(), KernelError> {
        for &program in programs {
            let prog: &mut UProbe = hooks::program_mut(&mut self.ebpf, program)?;
            match prog.load() {
                Ok(()) | Err(ProgramError::AlreadyLoaded) => {}
                Err(source) => return Err(KernelError::Program { program, action: "loaded", source }),
            }
        }
        Ok(())
    }

    /// Attaches a loaded uprobe (or uretprobe) program at file offsets of
    /// `file` (a path the kernel can open: `/proc/PID/exe` or a
    /// `/proc/PID/map_files` entry works across mount namespaces).
    pub fn attach_uprobe(
        &mut self,
        program: &'static str,
        file: &Path,
        offsets: &[u64],
        scope: UprobeScope,
    ) -> Result<UprobeLink, KernelError> {
        let scope = match scope {
            UprobeScope::Process(pid) => aya::programs::uprobe::UProbeScope::OneProcess(pid),
            UprobeScope::AllProcesses => aya::programs::uprobe::UProbeScope::AllProcesses,
        };
        let prog: &mut UProbe = hooks::program_mut(&mut self.ebpf, program)?;
        let id = prog
            .attach(offsets.iter().copied(), file, scope)
            .map_err(|source| KernelError::Program { program, action: "attached", source })?;
        Ok(UprobeLink { program, id })
    }

    /// Detaches what [`Self::attach_uprobe`] attached. A link whose
    /// process is gone detaches all the same.
    pub fn detach_uprobe(&mut self, link: UprobeLink) {
        if let Ok(prog) = hooks::program_mut::<UProbe>(&mut self.ebpf, link.program) {
            let _ = prog.detach(link.id);
        }
    }

    /// The kernel's call counters for a traced process.
    pub fn calls(&self, pid: u32) -> Option<CallCounts> {
        Some(decode::call_counts(&self.traced.get(&pid, 0).ok()?))
    }

    /// GC work outside pauses, counted in the kernel for a process.
    pub fn gc_work(&self, pid: u32) -> Option<GcWork> {
        Some(decode::gc_work(&self.gc_totals.get(&pid, 0).ok()?))
    }

    /// Events lost to a full ring buffer, summed over CPUs, and records that
    /// could not be decoded.
    pub fn drops(&self) -> (u64, u64) {
        let kernel = self.drops.get(&0, 0).map(|per_cpu| per_cpu.iter().sum()).unwrap_or(0);
        (kernel, self.undecodable)
    }

    /// The user stack an event names (its `stack` key), or None when the
    /// LRU map has evicted it already (counted by the caller as lost).
    pub fn stack(&self, key: u64) -> Option<StackTrace> {
        self.stacks.get(&key, 0).ok()
    }

    /// The kernel's stack counters, summed over CPUs.
    pub fn stack_stats(&self) -> StackStats {
        let sum = |i: u32| self.stack_stats.get(&i, 0).map(|per_cpu| per_cpu.iter().sum()).unwrap_or(0);
        StackStats {
            captured: sum(stack_stat::CAPTURED),
            inserted: sum(stack_stat::INSERTED),
            truncated: sum(stack_stat::TRUNCATED),
            scanned: sum(stack_stat::SCANNED),
            scan_failed: sum(stack_stat::SCAN_FAILED),
        }
    }

    /// Records decoded from the ring buffer so far.
    pub fn decoded(&self) -> u64 {
        self.decoded
    }

    /// Waits until the kernel signals data (only when the buffer is filling
    /// up, or for rare events: frequent ones are submitted without wakeups).
    pub async fn readable(&mut self) -> io::Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Decodes everything waiting in the ring buffer.
    pub fn drain(&mut self, out: &mut Vec<Event>) {
        let ring = self.ring.get_mut();
        while let Some(item) = ring.next() {
            match decode(&item) {
                Ok(event) => {
                    self.decoded += 1;
                    out.push(event);
                }
                Err(_) => self.undecodable += 1,
            }
        }
    }
}

/// A comm as the kernel keeps it: at most 15 bytes, NUL-padded.
fn comm_key(name: &str) -> [u8; 16] {
    let mut key = [0u8; 16];
    let bytes = name.as_bytes();
    let n = bytes.len().min(15);
    key[..n].copy_from_slice(&bytes[..n]);
    key
}
