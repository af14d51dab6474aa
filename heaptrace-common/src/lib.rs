//! Wire types shared by heaptrace's kernel programs and its userspace collector.
//!
//! Everything here is `#[repr(C)]` with explicit padding and a compile-time
//! size check, because the same bytes are written by BPF code and read back by
//! userspace. Change a layout here and both sides change together.
//!
//! Flags are `u32`, never `bool`: a `bool` with any bit pattern other than 0/1
//! is undefined behaviour in Rust, and the kernel side cannot promise that.
#![no_std]

/// Kinds of record that travel through the ring buffer. Userspace counts
/// unknown kinds instead of failing on them.
pub mod kind {
    /// A successful memory-mapping syscall: [`super::MemEvent`].
    pub const MEM: u32 = 1;
    /// The last thread of a traced process exited: [`super::ExitEvent`].
    pub const EXIT: u32 = 2;
    /// The kernel's OOM killer chose a traced process: [`super::OomEvent`].
    pub const OOM: u32 = 3;
    /// One V8 garbage-collection pause ended: [`super::GcEvent`].
    pub const GC: u32 = 4;
    /// A process called execve and is (or may be) in the traced set:
    /// [`super::LifecycleEvent`].
    pub const EXEC: u32 = 5;
    /// A traced process forked a child that is traced too:
    /// [`super::LifecycleEvent`].
    pub const FORK: u32 = 6;
    /// V8 gave up for lack of heap ("JavaScript heap out of memory"):
    /// [`super::V8OomEvent`].
    pub const V8_OOM: u32 = 7;
    /// A signal that ends the process is being delivered to a traced
    /// process: [`super::FatalSignalEvent`].
    pub const FATAL_SIGNAL: u32 = 8;
}

/// What userspace asked the kernel to select at exec and fork time (a
/// global set at load). 0 means only the explicitly given pids are traced.
pub mod select {
    /// Every process on the host.
    pub const ALL: u32 = 1;
    /// Only processes whose comm is in the `COMMS` map.
    pub const COMM: u32 = 2;
    /// Only processes whose cgroup the `CGROUP_VERDICT` map selects;
    /// cgroups not in the map yet are left to userspace to decide.
    pub const CGROUP: u32 = 4;
}

/// Values of the `CGROUP_VERDICT` map.
pub mod cgroup_verdict {
    pub const SELECTED: u32 = 1;
    pub const REJECTED: u32 = 2;
}

/// [`ProcCounters::flags`] bits.
pub mod proc_flags {
    /// Traced because it matched the selection (not named by pid): its
    /// forked children are traced too, and it is checked again at exec.
    pub const FOLLOW: u64 = 1;
}

/// [`LifecycleEvent::flags`] bits.
pub mod lifecycle_flags {
    /// The process is in the traced set now.
    pub const TRACED: u32 = 1;
    /// It was traced before this exec (its address space was replaced).
    pub const WAS_TRACED: u32 = 2;
    /// Its cgroup has no verdict yet: userspace decides and, if selected,
    /// adds it.
    pub const UNDECIDED: u32 = 4;
}

/// Architecture-neutral names for the memory syscalls heaptrace follows.
/// The kernel programs map the architecture's syscall numbers to these, so
/// userspace never needs a syscall table.
pub mod mem_op {
    pub const MMAP: u32 = 1;
    pub const MUNMAP: u32 = 2;
    pub const MREMAP: u32 = 3;
    pub const BRK: u32 = 4;
    pub const MPROTECT: u32 = 5;
    /// One past the largest op: the length of per-op counter arrays.
    pub const COUNT: usize = 6;
}

/// Default size of the ring buffer shared by all kernel programs (bytes; a
/// power of two and a multiple of the page size; `--ring-buffer` overrides
/// it at load). It holds over 170k memory events: at the worst rate a single
/// process makes (an mmap storm, ~300k syscalls/s on fast hardware), more
/// than half a second, against the collector's drain interval (20 ms for
/// `heaptrace trace`, 100 ms for `heaptrace agent`).
pub const RING_BUFFER_BYTES: u32 = 16 << 20;

/// Capacity of the traced-process map (`--all` on a big host included).
pub const MAX_TRACED_PROCESSES: u32 = 65_536;

/// Capacity of the map of processes a fatal signal was reported for.
pub const MAX_DYING_PROCESSES: u32 = 4_096;

/// Capacity of the comm-selection map (`--comm`, repeated).
pub const MAX_SELECTED_COMMS: u32 = 64;

/// Capacity of the per-cgroup verdict cache. LRU: a forgotten verdict is
/// only asked again.
pub const MAX_CGROUP_VERDICTS: u32 = 8_192;

/// Capacity of the per-thread scratch map used by the classic-tracepoint
/// fallback to pair a syscall's entry (arguments) with its exit (result).
pub const MAX_PENDING_SYSCALLS: u32 = 16_384;

/// Fixed header of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// One of [`kind`].
    pub kind: u32,
    /// Process id (the kernel's tgid).
    pub pid: u32,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC, nanoseconds.
    pub ts_ns: u64,
    /// Id of the task's cgroup in the v2 hierarchy (inode of its directory).
    pub cgroup_id: u64,
}

/// A successful memory syscall of a traced process.
///
/// `args` are the syscall's first five arguments as the caller passed them
/// (meaning depends on `op`), `ret` its return value. Only successful calls
/// are emitted; failed ones are only counted.
/// - mmap: addr hint, len, prot, flags, fd; ret = mapped address
/// - munmap: addr, len
/// - mremap: old_addr, old_len, new_len, flags, new_addr; ret = new address
/// - brk: requested break; ret = the break after the call
/// - mprotect: addr, len, prot
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemEvent {
    pub header: EventHeader,
    /// One of [`mem_op`].
    pub op: u32,
    pub _pad: u32,
    pub args: [u64; 5],
    pub ret: u64,
    /// Key of the user stack captured at this call in the stacks map
    /// ([`StackTrace`]), or 0 when none was taken (a call that allocates
    /// nothing, one below the size bound, or stacks off).
    pub stack: u64,
}

/// Frames one captured stack holds at most. Allocation stacks of a Node
/// process are 20 to 60 frames deep (V8's allocation path, then JS frames
/// of an Express-like server); the innermost ones are kept, which are the
/// ones that name the allocating code.
pub const MAX_STACK_FRAMES: usize = 48;

/// Capacity of the stacks map. LRU: userspace reads each stack once, just
/// after the event that names it, and caches it; an evicted stack the
/// collector has not read yet is counted as lost.
pub const MAX_STACKS: u32 = 8_192;

/// Default lower bound (bytes) for an mmap or mprotect to get a stack: V8
/// commits heap pages of 256 KiB and glibc grows an arena by at least its
/// 128 KiB top pad, while V8's code-page permission flips are a few pages.
pub const STACK_MIN_BYTES: u64 = 64 << 10;

/// A user stack, walked by frame pointers at an allocating syscall.
///
/// `pcs[0]` is the syscall's user instruction pointer, `pcs[1]` the word at
/// the user stack pointer (the return address into the caller, when the
/// libc wrapper is a leaf, as glibc's mmap/mprotect/brk wrappers are), then
/// the return addresses of the frame-pointer chain. `slots[i]` is the word
/// at `fp - 16` of the frame `pcs[i]` runs in (V8 keeps a JS frame's
/// JSFunction there), or 0 if unreadable.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackTrace {
    /// Frames filled.
    pub len: u32,
    /// 1 if the walk stopped at [`MAX_STACK_FRAMES`] with more to go.
    pub truncated: u32,
    /// When `rbp` at the syscall was no frame pointer (glibc's malloc is
    /// built without them), the index of the first frame found by scanning
    /// the stack for the frame record its callee saved; 0 if no scan. The
    /// frames between the syscall's caller and that one are missing.
    pub scanned_from: u32,
    pub _pad: u32,
    pub pcs: [u64; MAX_STACK_FRAMES],
    pub slots: [u64; MAX_STACK_FRAMES],
}

impl Default for StackTrace {
    fn default() -> Self {
        StackTrace {
            len: 0,
            truncated: 0,
            scanned_from: 0,
            _pad: 0,
            pcs: [0; MAX_STACK_FRAMES],
            slots: [0; MAX_STACK_FRAMES],
        }
    }
}

/// Indexes of the per-CPU stack counters.
pub mod stack_stat {
    /// Stacks captured (walks done).
    pub const CAPTURED: u32 = 0;
    /// Stacks that were new to the stacks map (inserted).
    pub const INSERTED: u32 = 1;
    /// Walks cut at [`super::MAX_STACK_FRAMES`].
    pub const TRUNCATED: u32 = 2;
    /// Walks that had to scan for a frame record (no frame pointer at the
    /// syscall), and scans that found none.
    pub const SCANNED: u32 = 3;
    pub const SCAN_FAILED: u32 = 4;
    pub const COUNT: u32 = 5;
}

/// The whole thread group of a traced process has exited. The kernel
/// removes the process from the traced set at that moment (so a reused pid
/// can never inherit its entry) and hands over its final counters here.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitEvent {
    pub header: EventHeader,
    pub counters: ProcCounters,
    pub gc: GcTotals,
    /// The process's `wait(2)` status: `code << 8` for an exit, the
    /// terminating signal in the low 7 bits (0x80 if it dumped core). Valid
    /// if [`exit_flags::STATUS_KNOWN`] is set.
    pub status: i32,
    /// [`exit_flags`].
    pub flags: u32,
}

/// [`ExitEvent::flags`] bits.
pub mod exit_flags {
    /// `status` was read from the kernel's task (its offsets were found).
    pub const STATUS_KNOWN: u32 = 1;
}

/// A process's memory, read in the kernel from its `mm_struct` (bytes).
///
/// The RSS counters are `percpu_counter`s on kernels 6.2 and later: the
/// kernel reads their central `count` only (as `get_mm_counter` does), so
/// each may lag the exact sum by up to `nr_cpus * percpu_counter_batch`
/// pages (the batch is `max(32, 2 * nr_cpus)`), e.g. 256 KiB on two CPUs.
/// The exact sum needs every CPU's per-CPU offset (`__per_cpu_offset`), which
/// is not reachable without `CONFIG_KALLSYMS_ALL`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryReading {
    pub rss_anon: u64,
    pub rss_file: u64,
    pub rss_shmem: u64,
    /// `mm->total_vm`: the address space's size.
    pub vm: u64,
    /// [`memory_flags`].
    pub flags: u32,
    pub _pad: u32,
}

/// [`MemoryReading::flags`] bits.
pub mod memory_flags {
    /// The reading was made (offsets known, the task still had its mm).
    pub const READ: u32 = 1;
}

/// V8 gave up for lack of heap; `memory` is the process's at that call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct V8OomEvent {
    pub header: EventHeader,
    pub memory: MemoryReading,
}

/// A signal that ends the process is being delivered to it (sent once per
/// process); `memory` is read at that moment, before the process is torn
/// down.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FatalSignalEvent {
    pub header: EventHeader,
    pub signal: u32,
    pub _pad: u32,
    pub memory: MemoryReading,
}

/// Offsets into kernel structures, found by userspace in the kernel's BTF
/// (`/sys/kernel/btf/vmlinux`) and set as a global at load. A group whose
/// bit in `flags` is clear was not found; the programs then do without it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// [`kernel_offsets`] bits.
    pub flags: u32,
    /// `PAGE_SHIFT`: RSS counters and `total_vm` count pages.
    pub page_shift: u32,
    /// `task_struct`: `mm`, `exit_code`, `signal`, `group_leader`.
    pub task_mm: u32,
    pub task_exit_code: u32,
    pub task_signal: u32,
    pub task_group_leader: u32,
    /// `mm_struct`: `rss_stat` (an array of counters, one per
    /// `MM_*PAGES`), `total_vm`.
    pub mm_rss_stat: u32,
    pub mm_total_vm: u32,
    /// Size of one `rss_stat` element, and the offset of its value (the
    /// `count` of a `percpu_counter`, or an `atomic_long_t` before 6.2).
    pub rss_stride: u32,
    pub rss_count: u32,
    /// `signal_struct`: `flags`, `group_exit_code`, `group_exec_task` (0 if
    /// this kernel has none).
    pub signal_flags: u32,
    pub signal_group_exit_code: u32,
    pub signal_group_exec_task: u32,
    pub _pad: u32,
}

/// [`KernelOffsets::flags`] bits.
pub mod kernel_offsets {
    /// `task_mm`, `mm_*`, `rss_*` and `page_shift` are set.
    pub const MEMORY: u32 = 1;
    /// `task_exit_code`, `task_signal`, `task_group_leader` and `signal_*`
    /// are set.
    pub const SIGNAL: u32 = 2;
}

impl KernelOffsets {
    /// Nothing known (the value the object is built with).
    pub const NONE: Self = Self {
        flags: 0,
        page_shift: 0,
        task_mm: 0,
        task_exit_code: 0,
        task_signal: 0,
        task_group_leader: 0,
        mm_rss_stat: 0,
        mm_total_vm: 0,
        rss_stride: 0,
        rss_count: 0,
        signal_flags: 0,
        signal_group_exit_code: 0,
        signal_group_exec_task: 0,
        _pad: 0,
    };
}

/// The kernel's `enum mm_counter_type` (include/linux/mm_types_task.h).
pub mod mm_counter {
    pub const FILEPAGES: u32 = 0;
    pub const ANONPAGES: u32 = 1;
    pub const SHMEMPAGES: u32 = 3;
}

/// An exec or fork of a process that is, or may become, traced.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LifecycleEvent {
    /// `header.pid` is the process (for a fork, the child).
    pub header: EventHeader,
    /// Fork: the parent's tgid. Exec: 0.
    pub parent_pid: u32,
    /// [`lifecycle_flags`].
    pub flags: u32,
    /// The command name after the exec (for a fork, the parent's).
    pub comm: [u8; 16],
}

/// The OOM killer marked a traced process as its victim. Sizes are in kB, as
/// the `oom:mark_victim` tracepoint's fields carry them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OomEvent {
    pub header: EventHeader,
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
}

/// Per-process counters, kept in the kernel as the value of the traced-set
/// map. They are updated for every memory syscall, so they stay exact even
/// when the ring buffer overflows and events are dropped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcCounters {
    /// Successful calls, indexed by [`mem_op`] (index 0 unused).
    pub calls: [u64; mem_op::COUNT],
    /// Calls that returned an error.
    pub failed_calls: u64,
    /// [`proc_flags`].
    pub flags: u64,
}

/// Arguments saved at syscall entry by the classic-tracepoint fallback.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingSyscall {
    pub op: u32,
    pub _pad: u32,
    pub args: [u64; 5],
}

/// One V8 pause, from `GCTracer::StartObservablePause` to
/// `StopObservablePause`, emitted after it ended.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcEvent {
    /// `header.ts_ns` is the kernel time at the pause's start.
    pub header: EventHeader,
    /// The pause's length in ns: from V8's own timestamps where the V8
    /// version passes them (µs resolution), else kernel time at the two
    /// probes.
    pub pause_ns: u64,
    /// `Heap::SizeOfObjects()` at the start and end of the pause; 0 if not
    /// seen.
    pub heap_before: u64,
    pub heap_after: u64,
    /// V8's `GarbageCollector` (0 scavenger, 1 mark-compact, 2 minor MC/MS).
    pub collector: u32,
    /// V8's `GarbageCollectionReason`, or [`GC_REASON_UNKNOWN`].
    pub reason: u32,
    /// [`gc_flags`].
    pub flags: u32,
    /// Major GCs: incremental-marking steps since marking started, and
    /// their total time (kernel-timed around `IncrementalMarking::Step`).
    pub marking_steps: u32,
    pub marking_step_ns: u64,
    /// Major GCs: the stall of `Heap::StartIncrementalMarking` that began
    /// this cycle (0 if marking was not incremental, or started before
    /// heaptrace attached).
    pub marking_start_ns: u64,
    /// `this` of the last `Heap::CollectGarbage` on this thread: the
    /// address of V8's `Heap` that collected (0 if not seen).
    pub heap: u64,
}

/// Per-process totals of GC work outside the pauses, kept in the kernel
/// (steps run up to thousands of times a second: counted, never streamed).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcTotals {
    pub marking_steps: u64,
    pub marking_step_ns: u64,
    pub marking_starts: u64,
    pub marking_start_ns: u64,
    /// Weak callbacks (`CallGCPrologueCallbacks(kGCTypeProcessWeakCallbacks)`
    /// to the matching epilogue).
    pub weak_callbacks: u64,
    pub weak_callback_ns: u64,
}

/// `v8::GCType::kGCTypeProcessWeakCallbacks`.
pub const GC_TYPE_PROCESS_WEAK_CALLBACKS: u32 = 16;

pub const GC_REASON_UNKNOWN: u32 = u32::MAX;

pub mod gc_flags {
    /// `pause_ns` came from V8's own timestamps.
    pub const V8_TIMESTAMPS: u32 = 1;
    /// The collector was known (from the probe that reports it).
    pub const COLLECTOR_KNOWN: u32 = 2;
}

/// Per-thread state of a GC in progress (each isolate GCs on its own
/// thread, so the thread id keys it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcThreadState {
    /// Kernel time at StartObservablePause.
    pub start_ns: u64,
    /// V8's start timestamp (µs), when the version passes one.
    pub v8_start_us: u64,
    pub heap_before: u64,
    pub heap_after: u64,
    pub reason: u32,
    pub collector: u32,
    /// `Heap::SizeOfObjects` returns seen in this pause: the first is the
    /// heap before (GCTracer::StartInSafepoint), the last the heap after
    /// (GCTracer::StopInSafepoint).
    pub size_calls: u32,
    pub flags: u32,
    /// Incremental marking of the current cycle.
    pub marking_steps: u32,
    pub _pad: u32,
    pub marking_step_ns: u64,
    pub marking_start_ns: u64,
    /// Entry time of the step, marking start or weak callbacks in progress.
    pub step_begin_ns: u64,
    pub marking_start_begin_ns: u64,
    pub weak_begin_ns: u64,
    /// `this` of the last `Heap::CollectGarbage` (V8's `Heap*`).
    pub heap: u64,
}

/// Capacity of the per-thread GC state map.
pub const MAX_GC_THREADS: u32 = 16_384;

const _: () = assert!(core::mem::size_of::<GcEvent>() == 96);
const _: () = assert!(core::mem::size_of::<GcTotals>() == 48);
const _: () = assert!(core::mem::size_of::<GcThreadState>() == 104);
const _: () = assert!(core::mem::size_of::<MemoryReading>() == 40);
const _: () = assert!(core::mem::size_of::<V8OomEvent>() == 72);
const _: () = assert!(core::mem::size_of::<FatalSignalEvent>() == 80);
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 56);
const _: () = assert!(core::mem::size_of::<EventHeader>() == 32);
const _: () = assert!(core::mem::size_of::<MemEvent>() == 96);
const _: () = assert!(core::mem::size_of::<StackTrace>() == 16 + 16 * MAX_STACK_FRAMES);
const _: () = assert!(core::mem::size_of::<ExitEvent>() == 152);
const _: () = assert!(core::mem::size_of::<LifecycleEvent>() == 56);
const _: () = assert!(core::mem::size_of::<OomEvent>() == 64);
const _: () = assert!(core::mem::size_of::<ProcCounters>() == 64);
const _: () = assert!(core::mem::size_of::<PendingSyscall>() == 48);

/// x86_64 syscall numbers of the calls heaptrace follows.
pub mod syscall_x86_64 {
    pub const MMAP: u64 = 9;
    pub const MPROTECT: u64 = 10;
    pub const MUNMAP: u64 = 11;
    pub const BRK: u64 = 12;
    pub const MREMAP: u64 = 25;
}

/// Maps an x86_64 syscall number to a [`mem_op`], or 0 if not followed.
#[inline(always)]
pub const fn mem_op_for_x86_64_syscall(nr: u64) -> u32 {
    match nr {
        syscall_x86_64::MMAP => mem_op::MMAP,
        syscall_x86_64::MUNMAP => mem_op::MUNMAP,
        syscall_x86_64::MREMAP => mem_op::MREMAP,
        syscall_x86_64::BRK => mem_op::BRK,
        syscall_x86_64::MPROTECT => mem_op::MPROTECT,
        _ => 0,
    }
}

/// `aya::Pod` for every wire type: userspace reads them from maps and from
/// ring-buffer bytes, and `Pod` is what makes either read sound.
#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type below is #[repr(C)], Copy, made only of integers and
    // arrays of integers, with all padding made explicit, so any bit pattern
    // is a valid value and there are no uninitialised bytes.
    unsafe impl aya::Pod for super::EventHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MemEvent {}
    // SAFETY: repr(C), integers only, no padding (size asserted above).
    unsafe impl aya::Pod for super::StackTrace {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExitEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LifecycleEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OomEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GcEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProcCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PendingSyscall {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GcTotals {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MemoryReading {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::V8OomEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FatalSignalEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KernelOffsets {}
}
