//! Building and sending ring-buffer records: one header for every program,
//! and one way to send a record that counts it when the buffer is full.

use aya_ebpf::helpers::{bpf_get_current_cgroup_id, bpf_ktime_get_ns};
use heaptrace_common::EventHeader;

use crate::maps::{EVENTS, count_drop};

/// The header of a record about the current task: `pid_tgid` as
/// `bpf_get_current_pid_tgid()` returns it, the time now, and the task's
/// cgroup. A record about another process (a fork's child, an OOM victim)
/// overwrites `pid` and `tid`.
#[inline(always)]
pub fn header(kind: u32, pid_tgid: u64) -> EventHeader {
    // SAFETY: a plain helper with no arguments.
    header_at(kind, pid_tgid, unsafe { bpf_ktime_get_ns() })
}

/// [`header`] for a record stamped with an earlier time (a GC pause's
/// start).
#[inline(always)]
pub fn header_at(kind: u32, pid_tgid: u64, ts_ns: u64) -> EventHeader {
    EventHeader {
        kind,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        _pad: 0,
        ts_ns,
        // SAFETY: a plain helper with no arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
    }
}

/// Copies `event` into the ring buffer; a full buffer counts a drop.
/// `flags`: 0 wakes the collector (rare events), [`crate::maps::QUIET`] does
/// not (frequent ones).
#[inline(always)]
pub fn send<T>(event: &T, flags: u64) {
    if EVENTS.output(event, flags).is_err() {
        count_drop();
    }
}
