//! Process lifecycle: exit of a whole thread group, and OOM-killer victims.
//! Both are rare, so they are streamed with a normal wakeup.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use heaptrace_common::{EventHeader, ExitEvent, OomEvent, kind};

use crate::maps::{EVENTS, TRACED, count_drop};

/// Offset of `group_dead` in `sched:sched_process_exit`, read by userspace
/// from the tracepoint's format file and set at load time. 0 means the field
/// does not exist on this kernel: then the exit of the thread whose tid
/// equals the tgid is taken as the process exit.
#[unsafe(no_mangle)]
static EXIT_GROUP_DEAD_OFFSET: u32 = 0;

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if TRACED.get_ptr(&tgid).is_none() {
        return 0;
    }
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
    let event = ExitEvent { header: header(kind::EXIT, pid_tgid) };
    if EVENTS.output(&event, 0).is_err() {
        count_drop();
    }
    0
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
    if EVENTS.output(&event, 0).is_err() {
        count_drop();
    }
    0
}

#[inline(always)]
fn header(kind: u32, pid_tgid: u64) -> EventHeader {
    EventHeader {
        kind,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        _pad: 0,
        // SAFETY: plain helpers with no arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        // SAFETY: as above.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
    }
}
