//! Every map the kernel programs share, and the small helpers around them.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use heaptrace_common::{
    GcThreadState, GcTotals, MAX_CGROUP_VERDICTS, MAX_DYING_PROCESSES, MAX_GC_THREADS, MAX_PENDING_SYSCALLS,
    MAX_SELECTED_COMMS, MAX_TRACED_PROCESSES, PendingSyscall, ProcCounters, RING_BUFFER_BYTES,
};

/// The traced set: tgid → that process's counters. Userspace inserts and
/// removes entries; the programs only look up and update. One lookup both
/// filters and finds the counters.
#[map]
pub static TRACED: HashMap<u32, ProcCounters> = HashMap::with_max_entries(MAX_TRACED_PROCESSES, 0);

/// `--comm` selection: command names (NUL-padded, as the kernel keeps
/// them) whose processes are traced from exec on.
#[map]
pub static COMMS: HashMap<[u8; 16], u32> = HashMap::with_max_entries(MAX_SELECTED_COMMS, 0);

/// `--container` / `--cgroup` selection: cgroup id → verdict (see
/// heaptrace_common::cgroup_verdict). Userspace decides each cgroup once,
/// from its path; the kernel only caches the answer.
#[map]
pub static CGROUP_VERDICT: aya_ebpf::maps::LruHashMap<u64, u32> =
    aya_ebpf::maps::LruHashMap::with_max_entries(MAX_CGROUP_VERDICTS, 0);

/// The one ring buffer for streamed events.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BUFFER_BYTES, 0);

/// Ring-buffer reserves that failed (buffer full), per CPU. Index 0 only.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Classic-tracepoint fallback only: syscall arguments saved at entry,
/// keyed by thread id, consumed at exit.
#[map]
pub static PENDING: HashMap<u32, PendingSyscall> = HashMap::with_max_entries(MAX_PENDING_SYSCALLS, 0);

/// GC in progress per thread id (see gc.rs). Entries of threads that exit
/// are evicted by the LRU policy, so the map cannot fill up.
#[map]
pub static GC_THREADS: aya_ebpf::maps::LruHashMap<u32, GcThreadState> =
    aya_ebpf::maps::LruHashMap::with_max_entries(MAX_GC_THREADS, 0);

/// Processes a fatal signal was reported for, tgid → 1: a process-wide
/// kill is delivered to every thread, and is reported once. The insert
/// (BPF_NOEXIST) is atomic, so two threads dying at once on two CPUs cannot
/// both report. Entries go with the process (exit); LRU, so leftovers of
/// processes userspace let go of cannot fill it.
#[map]
pub static DYING: aya_ebpf::maps::LruHashMap<u32, u32> =
    aya_ebpf::maps::LruHashMap::with_max_entries(MAX_DYING_PROCESSES, 0);

/// Per-process totals of GC work outside pauses (see gc.rs), tgid → totals.
#[map]
pub static GC_TOTALS: HashMap<u32, GcTotals> = HashMap::with_max_entries(MAX_TRACED_PROCESSES, 0);

/// Submit flag for frequent events: no wakeup. The collector drains on a
/// timer (every 20 ms for `heaptrace trace`, 100 ms for `heaptrace agent`),
/// so a wakeup inside the traced process's syscall, or inside a GC pause,
/// would be wasted work there. The default 16 MiB buffer holds over 170k
/// events, far more than any process makes between drains; rare events
/// (exec, fork, exits, OOM) are submitted with the default wakeup.
pub const QUIET: u64 = 1; // BPF_RB_NO_WAKEUP

/// Counts one event lost to a full ring buffer.
#[inline(always)]
pub fn count_drop() {
    if let Some(slot) = DROPS.get_ptr_mut(0) {
        // SAFETY: the pointer comes from a successful map lookup, is aligned
        // for u64 and stays valid for this program run. The add is atomic
        // because a program running with only migration disabled can be
        // preempted by another run of itself on the same CPU.
        unsafe { atomic_add(slot, 1) };
    }
}

/// Atomically adds `value` to the u64 behind `ptr` (a map value).
///
/// `AtomicU64::fetch_add` does not exist for the BPF target (it declares no
/// compare-and-swap), but the BPF instruction set has a native atomic add,
/// which LLVM emits for this intrinsic.
///
/// # Safety
/// `ptr` must be a valid, aligned pointer into a map value for the whole call.
#[inline(always)]
pub unsafe fn atomic_add(ptr: *mut u64, value: u64) {
    // SAFETY: the caller guarantees `ptr` is valid and aligned.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(ptr, value)
    };
}
