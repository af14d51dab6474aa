//! Reads from the current task's kernel structures (`task_struct`,
//! `mm_struct`, `signal_struct`), at offsets userspace found in the
//! kernel's BTF and set in [`KERNEL_OFFSETS`] at load. Every read goes
//! through `bpf_probe_read_kernel`, which fails instead of faulting; a group
//! of offsets that was not found is never used.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use heaptrace_common::{KernelOffsets, MemoryReading, kernel_offsets, memory_flags, mm_counter};

/// Set by userspace at load from the kernel's BTF (see
/// heaptrace/src/kernel/btf.rs); all zero means nothing is known.
#[unsafe(no_mangle)]
static KERNEL_OFFSETS: KernelOffsets = KernelOffsets::NONE;

/// `signal_struct.flags` bits (include/linux/sched/signal.h; stable since
/// 2.6).
pub const SIGNAL_GROUP_EXIT: u32 = 0x4;
pub const SIGNAL_UNKILLABLE: u32 = 0x40;

#[inline(always)]
pub fn offsets() -> KernelOffsets {
    // SAFETY: a volatile read of a global that userspace patches at load.
    unsafe { core::ptr::read_volatile(&KERNEL_OFFSETS) }
}

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
fn read<T>(base: u64, offset: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copies through the kernel's fault-safe
    // path: a bad address is an error, never a fault.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }.ok()
}

#[inline(always)]
fn current_task() -> u64 {
    // SAFETY: a plain helper with no arguments.
    unsafe { bpf_get_current_task() }
}

/// The current process's memory: RSS counters and `total_vm`, in bytes.
/// `flags` is 0 if it could not be read (offsets unknown, no mm any more).
///
/// The counters are read as `get_mm_counter` reads them: the central
/// `count` of each `percpu_counter`, without the per-CPU deltas (see
/// heaptrace_common::MemoryReading for the bound).
#[inline(always)]
pub fn memory() -> MemoryReading {
    let o = offsets();
    let mut m = MemoryReading::default();
    if o.flags & kernel_offsets::MEMORY == 0 {
        return m;
    }
    let Some(mm) = read::<u64>(current_task(), o.task_mm) else { return m };
    if mm == 0 {
        return m;
    }
    let counter = |member: u32| -> Option<u64> {
        let raw: i64 = read(mm, o.mm_rss_stat + member * o.rss_stride + o.rss_count)?;
        // A percpu_counter's count can dip below zero while deltas sit on
        // other CPUs.
        Some((raw.max(0) as u64) << o.page_shift)
    };
    let (Some(anon), Some(file), Some(shmem), Some(vm)) = (
        counter(mm_counter::ANONPAGES),
        counter(mm_counter::FILEPAGES),
        counter(mm_counter::SHMEMPAGES),
        read::<u64>(mm, o.mm_total_vm),
    ) else {
        return m;
    };
    m.rss_anon = anon;
    m.rss_file = file;
    m.rss_shmem = shmem;
    m.vm = vm << o.page_shift;
    m.flags = memory_flags::READ;
    m
}

/// The current process's `signal_struct`: (`flags`, `group_exit_code`,
/// whether an exec is killing the other threads).
#[inline(always)]
pub fn signal_state() -> Option<(u32, i32, bool)> {
    let o = offsets();
    if o.flags & kernel_offsets::SIGNAL == 0 {
        return None;
    }
    let signal: u64 = read(current_task(), o.task_signal)?;
    let flags: u32 = read(signal, o.signal_flags)?;
    let code: i32 = read(signal, o.signal_group_exit_code)?;
    let exec =
        o.signal_group_exec_task != 0 && read::<u64>(signal, o.signal_group_exec_task).unwrap_or(0) != 0;
    Some((flags, code, exec))
}

/// The exiting process's `wait(2)` status, as the kernel's `wait_task_zombie`
/// computes it: the group's exit code for a group exit (exit_group, a fatal
/// signal), else its leader's own exit code.
#[inline(always)]
pub fn exit_status() -> Option<i32> {
    let o = offsets();
    let (flags, group_code, _) = signal_state()?;
    if flags & SIGNAL_GROUP_EXIT != 0 {
        return Some(group_code);
    }
    let leader: u64 = read(current_task(), o.task_group_leader)?;
    read(leader, o.task_exit_code)
}
