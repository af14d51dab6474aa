//! Process lifecycle: exec and fork (which grow the traced set when a
//! selection such as `--comm` or `--all` is active), exit of a whole thread
//! group, and OOM-killer victims. All are rare, so they are streamed with a
//! normal wakeup: userspace must read a new process's maps and attach its GC
//! probes before it gets far.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::tracepoint,
    programs::TracePointContext,
};
use heaptrace_common::{
    ExitEvent, FatalSignalEvent, LifecycleEvent, OomEvent, ProcCounters, cgroup_verdict, exit_flags, kind,
    lifecycle_flags, proc_flags, select,
};

use crate::{
    event::{header, send},
    maps::{CGROUP_VERDICT, COMMS, DYING, EVENTS, GC_TOTALS, TRACED, count_drop},
    task::{SIGNAL_GROUP_EXIT, SIGNAL_UNKILLABLE, exit_status, memory, signal_state},
};

/// Offset of `group_dead` in `sched:sched_process_exit`, read by userspace
/// from the tracepoint's format file and set at load time. 0 means the field
/// does not exist on this kernel: then the exit of the thread whose tid
/// equals the tgid is taken as the process exit.
#[unsafe(no_mangle)]
static EXIT_GROUP_DEAD_OFFSET: u32 = 0;

/// heaptrace_common::select bits, set at load time. 0: only explicit pids.
#[unsafe(no_mangle)]
static SELECT: u32 = 0;

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(counters) = TRACED.get_ptr(&tgid) else {
        return 0;
    };
    // SAFETY: a volatile read of a global that userspace may patch at load.
    let offset = unsafe { core::ptr::read_volatile(&EXIT_GROUP_DEAD_OFFSET) };
    let whole_process_exited = if offset == 0 {
        pid_tgid as u32 == tgid
    } else {
        // SAFETY: the offset comes from this kernel's format file; the read
        // goes through bpf_probe_read_kernel and fails instead of faulting.
        unsafe { ctx.read_at::<u8>(offset as usize) }.unwrap_or(0) != 0
    };
    if !whole_process_exited {
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<ExitEvent>(0) else {
        count_drop();
        // Still leave the traced set: a stale entry would let a later
        // process with the same pid inherit it.
        untrace(tgid);
        return 0;
    };
    // SAFETY: both pointers come from successful lookups in this run; every
    // thread of the process has exited, so nothing updates them any more.
    let (counters, gc) = unsafe { (*counters, GC_TOTALS.get(&tgid).copied().unwrap_or_default()) };
    let (status, flags) = match exit_status() {
        Some(status) => (status, exit_flags::STATUS_KNOWN),
        None => (0, 0),
    };
    entry.write(ExitEvent { header: header(kind::EXIT, pid_tgid), counters, gc, status, flags });
    entry.submit(0);
    untrace(tgid);
    0
}

/// Removes a process from the traced set and its GC totals (userspace's
/// `Tracer::untrace` does the same for processes it lets go of).
#[inline(always)]
fn untrace(tgid: u32) {
    let _ = TRACED.remove(&tgid);
    let _ = GC_TOTALS.remove(&tgid);
    let _ = DYING.remove(&tgid);
}

/// Whether the current process matches the selection.
enum Verdict {
    Yes,
    No,
    /// Its cgroup is new: userspace must look at its path.
    Ask,
}

#[inline(always)]
fn selected(select_bits: u32) -> Verdict {
    if select_bits & select::ALL != 0 {
        return Verdict::Yes;
    }
    if select_bits & select::COMM != 0 {
        let Ok(comm) = bpf_get_current_comm() else { return Verdict::No };
        // SAFETY: a plain lookup; the value is not dereferenced.
        if unsafe { COMMS.get(&comm) }.is_none() {
            return Verdict::No;
        }
    }
    if select_bits & select::CGROUP != 0 {
        // SAFETY: a plain helper with no arguments.
        let cgroup = unsafe { bpf_get_current_cgroup_id() };
        // SAFETY: a lookup whose value is copied out at once.
        return match unsafe { CGROUP_VERDICT.get(&cgroup) }.copied() {
            Some(cgroup_verdict::SELECTED) => Verdict::Yes,
            Some(_) => Verdict::No,
            None => Verdict::Ask,
        };
    }
    Verdict::Yes
}

/// After a successful execve (running as the new program). A traced
/// process's address space was just replaced; a process that now matches
/// the selection joins the traced set before its first mmap.
#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: a volatile read of a global that userspace may patch at load.
    let select_bits = unsafe { core::ptr::read_volatile(&SELECT) };
    let mut flags = 0;
    if let Some(counters) = TRACED.get_ptr(&tgid) {
        flags |= lifecycle_flags::WAS_TRACED;
        // SAFETY: pointer from a successful lookup in this run.
        let follow = unsafe { (*counters).flags } & proc_flags::FOLLOW != 0;
        // Explicit pids stay traced whatever they exec; processes traced
        // by selection are checked again (node spawning `sh` drops out).
        if !follow || matches!(selected(select_bits), Verdict::Yes) {
            flags |= lifecycle_flags::TRACED;
        } else {
            untrace(tgid);
        }
    } else {
        if select_bits == 0 {
            return 0;
        }
        match selected(select_bits) {
            Verdict::No => return 0,
            Verdict::Ask => flags |= lifecycle_flags::UNDECIDED,
            Verdict::Yes => {
                let counters = ProcCounters { flags: proc_flags::FOLLOW, ..Default::default() };
                if TRACED.insert(&tgid, &counters, BPF_NOEXIST as u64).is_ok() {
                    flags |= lifecycle_flags::TRACED;
                }
            }
        }
    }
    emit_lifecycle(kind::EXEC, pid_tgid, tgid, 0, flags);
    0
}

/// `task:task_newtask` field offsets (from its format file).
const NEWTASK_PID: usize = 8;
const NEWTASK_CLONE_FLAGS: usize = 32;
const CLONE_VM: u64 = 0x100;
const CLONE_THREAD: u64 = 0x10000;

/// A new task, in its parent's context. A new process (not a thread, and
/// not a vfork-style child sharing the parent's memory) of a process traced
/// by selection is traced too, from its first instruction.
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let parent = (pid_tgid >> 32) as u32;
    let Some(counters) = TRACED.get_ptr(&parent) else {
        return 0;
    };
    // SAFETY: pointer from a successful lookup in this run.
    if unsafe { (*counters).flags } & proc_flags::FOLLOW == 0 {
        return 0;
    }
    // SAFETY: offsets from the tracepoint's format; helper-based reads.
    let clone_flags = unsafe { ctx.read_at::<u64>(NEWTASK_CLONE_FLAGS) }.unwrap_or(CLONE_THREAD);
    if clone_flags & (CLONE_THREAD | CLONE_VM) != 0 {
        return 0;
    }
    // SAFETY: as above.
    let Ok(child) = (unsafe { ctx.read_at::<i32>(NEWTASK_PID) }) else {
        return 0;
    };
    let child = child as u32;
    let counters = ProcCounters { flags: proc_flags::FOLLOW, ..Default::default() };
    if TRACED.insert(&child, &counters, BPF_NOEXIST as u64).is_ok() {
        emit_lifecycle(kind::FORK, pid_tgid, child, parent, lifecycle_flags::TRACED);
    }
    0
}

#[inline(always)]
fn emit_lifecycle(kind: u32, pid_tgid: u64, pid: u32, parent_pid: u32, flags: u32) {
    let mut event = LifecycleEvent {
        header: header(kind, pid_tgid),
        parent_pid,
        flags,
        comm: bpf_get_current_comm().unwrap_or_default(),
    };
    event.header.pid = pid;
    event.header.tid = pid;
    send(&event, 0);
}

/// `oom:mark_victim` field offsets (from its format file).
const OOM_PID: usize = 8;
const OOM_TOTAL_VM: usize = 16;
const OOM_ANON_RSS: usize = 24;
const OOM_FILE_RSS: usize = 32;
const OOM_SHMEM_RSS: usize = 40;

#[tracepoint]
pub fn oom_mark_victim(ctx: TracePointContext) -> u32 {
    // This runs in the context of the task that triggered the OOM kill, not
    // the victim: filter on the victim's pid from the record.
    // SAFETY: offsets from the tracepoint's format; helper-based reads.
    let Ok(victim) = (unsafe { ctx.read_at::<i32>(OOM_PID) }) else {
        return 0;
    };
    let victim = victim as u32;
    if TRACED.get_ptr(&victim).is_none() {
        return 0;
    }
    // SAFETY: as above.
    let read = |offset| unsafe { ctx.read_at::<u64>(offset) }.unwrap_or(0);
    let mut event = OomEvent {
        header: header(kind::OOM, bpf_get_current_pid_tgid()),
        total_vm_kb: read(OOM_TOTAL_VM),
        anon_rss_kb: read(OOM_ANON_RSS),
        file_rss_kb: read(OOM_FILE_RSS),
        shmem_rss_kb: read(OOM_SHMEM_RSS),
    };
    event.header.pid = victim;
    event.header.tid = victim;
    send(&event, 0);
    0
}

/// Offsets of `sig` and `sa_handler` in `signal:signal_deliver`, read by
/// userspace from the tracepoint's format file and set at load.
#[unsafe(no_mangle)]
static SIGNAL_DELIVER_SIG_OFFSET: u32 = 8;
#[unsafe(no_mangle)]
static SIGNAL_DELIVER_HANDLER_OFFSET: u32 = 24;

const SIGKILL: i32 = 9;
/// `SIG_DFL`: the signal's default action.
const SIG_DFL: u64 = 0;

/// Whether a signal's default action ends the process (terminate, or dump
/// core): all but the ignored (SIGCHLD, SIGCONT, SIGURG, SIGWINCH) and the
/// stopping ones (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU).
#[inline(always)]
fn default_is_fatal(sig: i32) -> bool {
    !matches!(sig, 17..=23 | 28) && sig > 0
}

/// A signal is being delivered (`get_signal`, in the receiving thread).
/// Reports, once per process, a signal that ends it, with its memory read
/// now, before `exit_mm` tears it down.
///
/// Which deliveries end the process:
/// - a signal whose handler is `SIG_DFL` and whose default action is to
///   terminate or dump core (not for a container's init, which the kernel
///   lets ignore them);
/// - SIGKILL. The kernel turns every fatal signal it can act on at once
///   (SIGKILL, and SIGTERM & co. with no handler) into a group exit and
///   delivers SIGKILL to each thread; an `exit_group` (process.exit) and an
///   exec do the same to the other threads. So for SIGKILL the real cause is
///   the group's exit code: a signal number in its low 7 bits is the one
///   that killed the process, an exit code is no signal death, and an
///   exec's kill (no group exit) is not a death at all.
#[tracepoint]
pub fn signal_deliver(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if TRACED.get_ptr(&tgid).is_none() {
        return 0;
    }
    // SAFETY: volatile reads of globals that userspace patches at load.
    let (sig_at, handler_at) = unsafe {
        (
            core::ptr::read_volatile(&SIGNAL_DELIVER_SIG_OFFSET),
            core::ptr::read_volatile(&SIGNAL_DELIVER_HANDLER_OFFSET),
        )
    };
    // SAFETY: offsets from the tracepoint's format; helper-based reads.
    let Ok(sig) = (unsafe { ctx.read_at::<i32>(sig_at as usize) }) else { return 0 };
    let signal = if sig == SIGKILL {
        match signal_state() {
            Some((flags, code, _)) if flags & SIGNAL_GROUP_EXIT != 0 => code & 0x7f,
            Some((_, _, true)) => 0, // an exec in another thread
            _ => SIGKILL,
        }
    } else {
        // SAFETY: as above.
        let handler = unsafe { ctx.read_at::<u64>(handler_at as usize) }.unwrap_or(1);
        let unkillable = signal_state().is_some_and(|(flags, _, _)| flags & SIGNAL_UNKILLABLE != 0);
        if handler == SIG_DFL && default_is_fatal(sig) && !unkillable { sig } else { 0 }
    };
    if signal == 0 {
        return 0;
    }
    // One report per process: the first thread to get here.
    if DYING.insert(&tgid, &1, BPF_NOEXIST as u64).is_err() {
        return 0;
    }
    let event = FatalSignalEvent {
        header: header(kind::FATAL_SIGNAL, pid_tgid),
        signal: signal as u32,
        _pad: 0,
        memory: memory(),
    };
    send(&event, 0);
    0
}
