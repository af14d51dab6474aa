//! The kernel edge: loads and attaches heaptrace's BPF programs, manages the
//! traced set, drains the ring buffer into core events and reads the
//! in-kernel counters. Nothing here aggregates; that is the core's job.

mod decode;
mod preflight;

use std::io;

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, ProgramError, RawTracePoint, TracePoint, UProbe, uprobe::UProbeLinkId},
};
use heaptrace_common::{ProcCounters, cgroup_verdict, proc_flags};
use thiserror::Error;
use tokio::io::{Interest, unix::AsyncFd};

pub use decode::{DecodeError, decode};
pub use preflight::{PreflightError, tracepoint_field_offset};

use crate::core::{CallCounts, Event};

/// The kernel programs, built by build.rs from heaptrace-ebpf.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/heaptrace"));

/// How memory syscalls are hooked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MemHookChoice {
    /// The cheapest mechanism this kernel allows, falling back in order.
    Auto,
    /// One BTF tracepoint on `sys_exit` that rejects non-memory syscalls with
    /// a plain load before anything else. Needs kernel BTF.
    BtfTracepoint,
    /// One raw tracepoint on `sys_exit` (pid filter first, then the syscall
    /// number, read with a helper). For kernels without BTF.
    RawTracepoint,
    /// Classic `syscalls:sys_{enter,exit}_*` tracepoints with entry/exit
    /// pairing: two programs per memory syscall, but allowed almost everywhere.
    Tracepoint,
}

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

/// Loaded and attached programs plus handles to their maps.
pub struct Tracer {
    // Keeps programs and links alive; dropping it detaches everything.
    _ebpf: Ebpf,
    traced: HashMap<MapData, u32, ProcCounters>,
    gc_totals: HashMap<MapData, u32, heaptrace_common::GcTotals>,
    drops: PerCpuArray<MapData, u64>,
    ring: AsyncFd<RingBuf<MapData>>,
    mem_hook: String,
    notes: Vec<String>,
    undecodable: u64,
    /// Records decoded so far.
    decoded: u64,
    cgroup_verdicts: HashMap<MapData, u64, u32>,
    /// GC uprobe programs loaded (once, on first use).
    gc_loaded: bool,
    /// Uprobe links per traced process, to detach when it goes.
    gc_links: std::collections::HashMap<u32, Vec<(&'static str, UProbeLinkId)>>,
    /// Probes shared by every process of one binary, by (device, inode).
    /// They stay until heaptrace exits: the kernel programs filter on the
    /// traced set, and the next process of that binary is covered from its
    /// first instruction.
    gc_binaries: std::collections::HashMap<(u64, u64), GcAttach>,
}

/// Who a GC probe attachment covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcScope {
    /// Only this process (named by pid): other processes of the binary
    /// never trap.
    Process,
    /// Every process of the binary, present and future; the programs
    /// filter on the traced set. For host-wide and selection tracing.
    Binary,
}

/// The kernel half of the selection (see heaptrace_common::select).
#[derive(Clone, Debug, Default)]
pub struct KernelSelection {
    pub bits: u32,
    /// Command names, at most 15 bytes each (the kernel's comm length).
    pub comms: Vec<String>,
}

/// What attaching the GC probes to one process did.
#[derive(Debug, Clone)]
pub struct GcAttach {
    /// Whether V8 passes its own pause timestamps (V8 >= 12.4).
    pub v8_timestamps: bool,
    /// Probe points attached, as "Function (n)".
    pub attached: Vec<String>,
    /// Functions not found (the figure they feed is missing).
    pub missing: Vec<&'static str>,
}

/// Every GC uprobe program in the object (see heaptrace-ebpf/src/gc.rs).
const GC_PROGRAMS: [&str; 14] = [
    "gc_collect_garbage",
    "gc_pause_start_v8ts",
    "gc_pause_start_legacy",
    "gc_pause_stop_v8ts",
    "gc_pause_stop_legacy",
    "gc_size_of_objects_return",
    "gc_epilogue_legacy",
    "gc_marking_step",
    "gc_marking_step_return",
    "gc_marking_start",
    "gc_marking_start_return",
    "gc_prologue_callbacks",
    "gc_epilogue_callbacks",
    "gc_fatal_oom",
];

impl Tracer {
    /// Checks privileges and kernel features, loads the programs and
    /// attaches them. Must run inside a tokio runtime (the ring buffer is
    /// registered with its reactor).
    pub fn load(
        choice: MemHookChoice,
        ring_buffer_bytes: u32,
        selection: &KernelSelection,
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
        let mut ebpf = EbpfLoader::new()
            .override_global("EXIT_GROUP_DEAD_OFFSET", &group_dead_offset, true)
            .override_global("SELECT", &selection.bits, true)
            .map_max_entries("EVENTS", ring_buffer_bytes)
            .load(EBPF_OBJECT)
            .map_err(KernelError::Load)?;

        let mem_hook = attach_mem_hook(&mut ebpf, choice, &mut notes)?;
        attach_tracepoint(&mut ebpf, "sched_process_exit", "sched", "sched_process_exit")?;
        // Exec and fork matter even for explicit pids (a traced process
        // that execs gets a new address space).
        attach_tracepoint(&mut ebpf, "sched_process_exec", "sched", "sched_process_exec")?;
        attach_tracepoint(&mut ebpf, "task_newtask", "task", "task_newtask")?;
        if let Err(e) = attach_tracepoint(&mut ebpf, "oom_mark_victim", "oom", "mark_victim") {
            notes.push(format!("OOM kills will not be reported: {e}"));
        }

        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| KernelError::NoMemHook(format!("map {name} missing from the object")))
        };
        let traced = HashMap::try_from(take(&mut ebpf, "TRACED")?)?;
        let drops = PerCpuArray::try_from(take(&mut ebpf, "DROPS")?)?;
        let gc_totals = HashMap::try_from(take(&mut ebpf, "GC_TOTALS")?)?;
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
            _ebpf: ebpf,
            traced,
            gc_totals,
            drops,
            ring,
            mem_hook,
            notes,
            undecodable: 0,
            decoded: 0,
            cgroup_verdicts,
            gc_loaded: false,
            gc_links: Default::default(),
            gc_binaries: Default::default(),
        })
    }

    /// Which memory-syscall hook is attached, for people.
    pub fn mem_hook(&self) -> &str {
        &self.mem_hook
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

    /// Records whether processes of a cgroup are selected, for the exec
    /// program to apply without asking again.
    pub fn set_cgroup_verdict(&mut self, cgroup_id: u64, selected: bool) -> Result<(), KernelError> {
        let verdict = if selected { cgroup_verdict::SELECTED } else { cgroup_verdict::REJECTED };
        Ok(self.cgroup_verdicts.insert(&cgroup_id, &verdict, 0)?)
    }

    /// Removes a process from the traced set (it is gone, or detached) and
    /// detaches its own GC probes.
    pub fn untrace(&mut self, pid: u32) {
        // Absent already (e.g. removed twice) is fine.
        let _ = self.traced.remove(&pid);
        let _ = self.gc_totals.remove(&pid);
        self.forget(pid);
    }

    /// After an exit (the kernel already dropped the process from its
    /// maps): detaches the probes attached for that process alone.
    pub fn forget(&mut self, pid: u32) {
        for (program, link) in self.gc_links.remove(&pid).unwrap_or_default() {
            if let Some(prog) = self._ebpf.program_mut(program).and_then(|p| <&mut UProbe>::try_from(p).ok())
            {
                let _ = prog.detach(link);
            }
        }
    }

    /// Whether GC probes shared by all processes of this binary exist.
    pub fn gc_covers(&self, file: (u64, u64)) -> bool {
        self.gc_binaries.contains_key(&file)
    }

    /// Attaches the V8 GC probes for a process, by file offset: to that
    /// process alone, or once per binary for all its processes.
    pub fn attach_gc(
        &mut self,
        pid: u32,
        v8: &crate::symbols::ProcessV8,
        scope: GcScope,
    ) -> Result<GcAttach, KernelError> {
        use crate::symbols::V8Function as F;
        if scope == GcScope::Binary
            && let Some(done) = self.gc_binaries.get(&v8.file)
        {
            return Ok(done.clone());
        }
        if !self.gc_loaded {
            for program in GC_PROGRAMS {
                let prog: &mut UProbe = program_mut(&mut self._ebpf, program)?;
                match prog.load() {
                    Ok(()) | Err(ProgramError::AlreadyLoaded) => {}
                    Err(source) => return Err(KernelError::Program { program, action: "loaded", source }),
                }
            }
            self.gc_loaded = true;
        }
        let symbols = &v8.symbols;
        let v8_timestamps = symbols.passes_timestamps();
        let (start, stop) = if v8_timestamps {
            ("gc_pause_start_v8ts", "gc_pause_stop_v8ts")
        } else {
            ("gc_pause_start_legacy", "gc_pause_stop_legacy")
        };
        let mut plan: Vec<(F, &'static str)> = vec![
            (F::CollectGarbage, "gc_collect_garbage"),
            (F::StartObservablePause, start),
            (F::StopObservablePause, stop),
            (F::SizeOfObjects, "gc_size_of_objects_return"),
            (F::IncrementalMarkingStep, "gc_marking_step"),
            (F::IncrementalMarkingStep, "gc_marking_step_return"),
            (F::StartIncrementalMarking, "gc_marking_start"),
            (F::StartIncrementalMarking, "gc_marking_start_return"),
            (F::CallGCPrologueCallbacks, "gc_prologue_callbacks"),
            (F::CallGCEpilogueCallbacks, "gc_epilogue_callbacks"),
            (F::FatalProcessOutOfMemory, "gc_fatal_oom"),
        ];
        if !v8_timestamps {
            // Older V8 does not pass the collector to StopObservablePause.
            plan.push((F::GarbageCollectionEpilogue, "gc_epilogue_legacy"));
        }
        let uprobe_scope = match scope {
            GcScope::Process => aya::programs::uprobe::UProbeScope::OneProcess(
                std::num::NonZeroU32::new(pid).ok_or_else(|| KernelError::NoMemHook("pid 0".into()))?,
            ),
            GcScope::Binary => aya::programs::uprobe::UProbeScope::AllProcesses,
        };
        let mut attached = Vec::new();
        let mut missing = Vec::new();
        let mut links = Vec::new();
        for (function, program) in plan {
            let offsets = symbols.offsets(function);
            if offsets.is_empty() {
                if !missing.contains(&function.name()) {
                    missing.push(function.name());
                }
                continue;
            }
            let prog: &mut UProbe = program_mut(&mut self._ebpf, program)?;
            let link = prog
                .attach(offsets.iter().copied(), &v8.attach_path, uprobe_scope)
                .map_err(|source| KernelError::Program { program, action: "attached", source })?;
            links.push((program, link));
            attached.push(format!("{} ({program})", function.name()));
        }
        let report = GcAttach { v8_timestamps, attached, missing };
        match scope {
            // The links live as long as the Ebpf object: until exit.
            GcScope::Binary => {
                self.gc_binaries.insert(v8.file, report.clone());
            }
            GcScope::Process => self.gc_links.entry(pid).or_default().extend(links),
        }
        Ok(report)
    }

    /// The kernel's call counters for a traced process.
    pub fn calls(&self, pid: u32) -> Option<CallCounts> {
        Some(decode::call_counts(&self.traced.get(&pid, 0).ok()?))
    }

    /// GC work outside pauses, counted in the kernel for a process.
    pub fn gc_work(&self, pid: u32) -> Option<crate::core::input::GcWork> {
        Some(decode::gc_work(&self.gc_totals.get(&pid, 0).ok()?))
    }

    /// Events lost to a full ring buffer, summed over CPUs, and records that
    /// could not be decoded.
    pub fn drops(&self) -> (u64, u64) {
        let kernel = self.drops.get(&0, 0).map(|per_cpu| per_cpu.iter().sum()).unwrap_or(0);
        (kernel, self.undecodable)
    }

    /// Records decoded from the ring buffer so far.
    pub fn decoded(&self) -> u64 {
        self.decoded
    }

    /// Waits until the kernel signals data (only when the buffer is filling
    /// up: events are submitted without wakeups otherwise).
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

type HookAttach = fn(&mut Ebpf) -> Result<String, KernelError>;

/// Mechanisms in order of preference (cheapest first; see docs/architecture.md).
const MEM_HOOKS: [(MemHookChoice, HookAttach); 3] = [
    (MemHookChoice::BtfTracepoint, attach_btf_sys_exit),
    (MemHookChoice::RawTracepoint, attach_raw_sys_exit),
    (MemHookChoice::Tracepoint, attach_syscall_tracepoints),
];

fn attach_mem_hook(
    ebpf: &mut Ebpf,
    choice: MemHookChoice,
    notes: &mut Vec<String>,
) -> Result<String, KernelError> {
    if let Some((_, attach)) = MEM_HOOKS.iter().find(|(c, _)| *c == choice) {
        return attach(ebpf);
    }
    let mut failures = Vec::new();
    for (hook, attach) in MEM_HOOKS {
        match attach(ebpf) {
            Ok(description) => {
                notes.extend(failures.into_iter().map(|f| format!("memory hook fallback: {f}")));
                return Ok(description);
            }
            Err(e) => failures.push(format!("{hook:?} unavailable ({e})")),
        }
    }
    Err(KernelError::NoMemHook(failures.join("; ")))
}

fn attach_btf_sys_exit(ebpf: &mut Ebpf) -> Result<String, KernelError> {
    let btf = aya::Btf::from_sys_fs()
        .map_err(|e| KernelError::NoMemHook(format!("kernel BTF unavailable: {e}")))?;
    let program = "mem_btf_sys_exit";
    let prog: &mut BtfTracePoint = program_mut(ebpf, program)?;
    prog.load("sys_exit", &btf).map_err(|source| KernelError::Program {
        program,
        action: "loaded",
        source,
    })?;
    prog.attach().map_err(|source| KernelError::Program { program, action: "attached", source })?;
    Ok("BTF tracepoint sys_exit".into())
}

fn attach_raw_sys_exit(ebpf: &mut Ebpf) -> Result<String, KernelError> {
    attach_raw_tracepoint(ebpf, "mem_sys_exit", "sys_exit")?;
    Ok("raw tracepoint sys_exit".into())
}

fn attach_raw_tracepoint(ebpf: &mut Ebpf, program: &'static str, tp: &str) -> Result<(), KernelError> {
    let prog: &mut RawTracePoint = program_mut(ebpf, program)?;
    prog.load().map_err(|source| KernelError::Program { program, action: "loaded", source })?;
    prog.attach(tp).map_err(|source| KernelError::Program { program, action: "attached", source })?;
    Ok(())
}

const SYSCALLS: [&str; 5] = ["mmap", "munmap", "mremap", "brk", "mprotect"];

fn attach_syscall_tracepoints(ebpf: &mut Ebpf) -> Result<String, KernelError> {
    for (program, phase) in [("mem_tp_enter", "enter"), ("mem_tp_exit", "exit")] {
        let prog: &mut TracePoint = program_mut(ebpf, program)?;
        prog.load().map_err(|source| KernelError::Program { program, action: "loaded", source })?;
        for syscall in SYSCALLS {
            prog.attach("syscalls", &format!("sys_{phase}_{syscall}"))
                .map_err(|source| KernelError::Program { program, action: "attached", source })?;
        }
    }
    Ok("classic tracepoints syscalls:sys_{enter,exit}_{mmap,munmap,mremap,brk,mprotect}".into())
}

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    program: &'static str,
    category: &str,
    name: &str,
) -> Result<(), KernelError> {
    let prog: &mut TracePoint = program_mut(ebpf, program)?;
    prog.load().map_err(|source| KernelError::Program { program, action: "loaded", source })?;
    prog.attach(category, name).map_err(|source| KernelError::Program {
        program,
        action: "attached",
        source,
    })?;
    Ok(())
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, program: &'static str) -> Result<&'a mut T, KernelError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let p = ebpf
        .program_mut(program)
        .ok_or_else(|| KernelError::NoMemHook(format!("program {program} missing from the object")))?;
    p.try_into().map_err(|source| KernelError::Program { program, action: "found", source })
}
