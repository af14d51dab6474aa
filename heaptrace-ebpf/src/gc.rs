//! V8 garbage-collection pauses, from uprobes on V8's own GC tracer.
//!
//! One pause is `GCTracer::StartObservablePause` → `StopObservablePause`
//! (`--trace-gc` prints its line inside the latter). Per thread, because each
//! isolate (main thread, workers) collects on its own thread:
//! - `Heap::CollectGarbage` entry gives the reason (arg 2) and the `Heap`
//!   that collects (`this`, arg 0: where userspace reads V8's heap limit);
//! - StartObservablePause gives the start (V8's µs timestamp in arg 1 on
//!   V8 >= 12.4, else kernel time);
//! - `Heap::SizeOfObjects` returning inside the pause gives heap used
//!   before (its first return: GCTracer::StartInSafepoint calls it) and after
//!   (its last: StopInSafepoint). Probing those two functions as well would
//!   cost four more traps per GC; the tests check the figures against
//!   `--trace-gc` on every supported build;
//! - the collector comes from StopObservablePause arg 1 (V8 >= 12.4) or
//!   `Heap::GarbageCollectionEpilogue` arg 1 (older);
//! - StopObservablePause emits the event, without a wakeup: waking the
//!   collector here would lengthen the very pause being measured.
//!
//! Outside the pauses, counted in the kernel (steps run thousands of times a
//! second during marking): `IncrementalMarking::Step` entry/return, the
//! `Heap::StartIncrementalMarking` stall, and weak callbacks
//! (`CallGCPrologueCallbacks` to `CallGCEpilogueCallbacks` with GCType
//! kGCTypeProcessWeakCallbacks). Each major GC also carries its cycle's steps.
//!
//! Which program goes on which V8 function, and on which V8 versions (the
//! `_v8ts` or the `_legacy` variants, told apart by the functions' mangled
//! signatures), is one table in userspace: `heaptrace/src/v8/probes.rs`. A
//! unit test there checks it against the programs in this object.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use heaptrace_common::{
    GC_REASON_UNKNOWN, GC_TYPE_PROCESS_WEAK_CALLBACKS, GcEvent, GcThreadState, GcTotals, V8OomEvent,
    gc_flags, kind,
};

use crate::{
    event::{header, header_at, send},
    maps::{GC_THREADS, GC_TOTALS, QUIET, TRACED, atomic_add},
    task::memory,
};

/// The calling thread's GC state, if its process is traced.
#[inline(always)]
fn thread_state(create: bool) -> Option<(u64, *mut GcThreadState)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    TRACED.get_ptr(&((pid_tgid >> 32) as u32))?;
    let tid = pid_tgid as u32;
    if let Some(state) = GC_THREADS.get_ptr_mut(&tid) {
        return Some((pid_tgid, state));
    }
    if !create {
        return None;
    }
    let fresh = GcThreadState { reason: GC_REASON_UNKNOWN, ..Default::default() };
    GC_THREADS.insert(&tid, &fresh, 0).ok()?;
    Some((pid_tgid, GC_THREADS.get_ptr_mut(&tid)?))
}

#[uprobe]
pub fn gc_collect_garbage(ctx: ProbeContext) -> u32 {
    if let Some((_, state)) = thread_state(true) {
        let reason: u32 = ctx.arg(2).unwrap_or(GC_REASON_UNKNOWN);
        let heap: u64 = ctx.arg(0).unwrap_or(0);
        // SAFETY: `state` points into a GC_THREADS value, valid for this run.
        unsafe {
            (*state).reason = reason;
            (*state).heap = heap;
        }
    }
    0
}

#[inline(always)]
fn pause_start(v8_start_us: Option<u64>) {
    let Some((_, state)) = thread_state(true) else { return };
    // SAFETY: as in gc_collect_garbage; bpf_ktime_get_ns takes no arguments.
    unsafe {
        (*state).start_ns = bpf_ktime_get_ns();
        (*state).v8_start_us = v8_start_us.unwrap_or(0);
        (*state).heap_before = 0;
        (*state).heap_after = 0;
        (*state).size_calls = 0;
        (*state).flags = 0;
    }
}

#[uprobe]
pub fn gc_pause_start_v8ts(ctx: ProbeContext) -> u32 {
    // StartObservablePause(this, base::TimeTicks start): µs, CLOCK_MONOTONIC.
    pause_start(ctx.arg::<u64>(1));
    0
}

#[uprobe]
pub fn gc_pause_start_legacy(_ctx: ProbeContext) -> u32 {
    pause_start(None);
    0
}

#[uretprobe]
pub fn gc_size_of_objects_return(ctx: RetProbeContext) -> u32 {
    let Some((_, state)) = thread_state(false) else { return 0 };
    let size: u64 = ctx.ret();
    // SAFETY: as in gc_collect_garbage.
    let s = unsafe { &mut *state };
    if s.start_ns == 0 {
        return 0; // not inside a pause
    }
    if s.size_calls == 0 {
        s.heap_before = size;
    } else {
        s.heap_after = size;
    }
    s.size_calls += 1;
    0
}

#[uprobe]
pub fn gc_epilogue_legacy(ctx: ProbeContext) -> u32 {
    // Heap::GarbageCollectionEpilogue(this, GarbageCollector collector).
    if let Some((_, state)) = thread_state(false) {
        let collector: u32 = ctx.arg(1).unwrap_or(0);
        // SAFETY: as in gc_collect_garbage.
        unsafe {
            (*state).collector = collector;
            (*state).flags |= gc_flags::COLLECTOR_KNOWN;
        }
    }
    0
}

#[inline(always)]
fn pause_stop(collector_and_end_us: Option<(u32, u64)>) {
    let Some((pid_tgid, state)) = thread_state(false) else { return };
    // SAFETY: a plain helper with no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: as in gc_collect_garbage.
    let s = unsafe { &mut *state };
    if s.start_ns == 0 {
        // Attached in the middle of this pause: its start was not seen.
        return;
    }
    let mut flags = s.flags;
    let mut collector = s.collector;
    let mut pause_ns = now.saturating_sub(s.start_ns);
    if let Some((c, end_us)) = collector_and_end_us {
        collector = c;
        flags |= gc_flags::COLLECTOR_KNOWN;
        if s.v8_start_us != 0 && end_us >= s.v8_start_us {
            pause_ns = (end_us - s.v8_start_us) * 1000;
            flags |= gc_flags::V8_TIMESTAMPS;
        }
    }
    let major = collector_and_end_us
        .map_or(s.flags & gc_flags::COLLECTOR_KNOWN != 0 && s.collector == 1, |(c, _)| c == 1);
    let (marking_steps, marking_step_ns, marking_start_ns) =
        if major { (s.marking_steps, s.marking_step_ns, s.marking_start_ns) } else { (0, 0, 0) };
    let event = GcEvent {
        // The record's time is the pause's start.
        header: header_at(kind::GC, pid_tgid, s.start_ns),
        pause_ns,
        heap_before: s.heap_before,
        heap_after: s.heap_after,
        collector,
        reason: s.reason,
        flags,
        marking_steps,
        marking_step_ns,
        marking_start_ns,
        heap: s.heap,
    };
    if major {
        // A major GC ends the marking cycle.
        s.marking_steps = 0;
        s.marking_step_ns = 0;
        s.marking_start_ns = 0;
    }
    s.start_ns = 0;
    s.reason = GC_REASON_UNKNOWN;
    s.flags = 0;
    send(&event, QUIET);
}

#[uprobe]
pub fn gc_pause_stop_v8ts(ctx: ProbeContext) -> u32 {
    // StopObservablePause(this, GarbageCollector collector, TimeTicks end).
    let collector: u32 = ctx.arg(1).unwrap_or(0);
    let end_us: u64 = ctx.arg(2).unwrap_or(0);
    pause_stop(Some((collector, end_us)));
    0
}

#[uprobe]
pub fn gc_pause_stop_legacy(_ctx: ProbeContext) -> u32 {
    pause_stop(None);
    0
}

/// This process's GC totals, created on first use.
#[inline(always)]
fn totals(pid_tgid: u64) -> Option<*mut GcTotals> {
    let tgid = (pid_tgid >> 32) as u32;
    if let Some(t) = GC_TOTALS.get_ptr_mut(&tgid) {
        return Some(t);
    }
    GC_TOTALS.insert(&tgid, &GcTotals::default(), 0).ok()?;
    GC_TOTALS.get_ptr_mut(&tgid)
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: a plain helper with no arguments.
    unsafe { bpf_ktime_get_ns() }
}

#[uprobe]
pub fn gc_marking_step(_ctx: ProbeContext) -> u32 {
    if let Some((_, state)) = thread_state(true) {
        // SAFETY: as in gc_collect_garbage.
        unsafe { (*state).step_begin_ns = now() };
    }
    0
}

/// Ends the interval that began at `*begin` (0: its start was not seen,
/// e.g. attached mid-call) and returns its length.
#[inline(always)]
fn end_interval(begin: &mut u64) -> Option<u64> {
    if *begin == 0 {
        return None;
    }
    let took = now().saturating_sub(*begin);
    *begin = 0;
    Some(took)
}

/// Adds one occurrence taking `took` ns to a pair of process totals,
/// chosen by `fields`.
#[inline(always)]
fn add_to_totals(pid_tgid: u64, took: u64, fields: fn(*mut GcTotals) -> (*mut u64, *mut u64)) {
    if let Some(t) = totals(pid_tgid) {
        let (count, ns) = fields(t);
        // SAFETY: both point into a GC_TOTALS value, valid for this run.
        unsafe {
            atomic_add(count, 1);
            atomic_add(ns, took);
        }
    }
}

#[uretprobe]
pub fn gc_marking_step_return(_ctx: RetProbeContext) -> u32 {
    let Some((pid_tgid, state)) = thread_state(false) else { return 0 };
    // SAFETY: as in gc_collect_garbage.
    let s = unsafe { &mut *state };
    let Some(took) = end_interval(&mut s.step_begin_ns) else { return 0 };
    s.marking_steps += 1;
    s.marking_step_ns += took;
    // SAFETY (in the closure): raw field addresses of a valid map value.
    add_to_totals(pid_tgid, took, |t| unsafe {
        (&raw mut (*t).marking_steps, &raw mut (*t).marking_step_ns)
    });
    0
}

#[uprobe]
pub fn gc_marking_start(_ctx: ProbeContext) -> u32 {
    if let Some((_, state)) = thread_state(true) {
        // SAFETY: as in gc_collect_garbage.
        unsafe { (*state).marking_start_begin_ns = now() };
    }
    0
}

#[uretprobe]
pub fn gc_marking_start_return(_ctx: RetProbeContext) -> u32 {
    let Some((pid_tgid, state)) = thread_state(false) else { return 0 };
    // SAFETY: as in gc_collect_garbage.
    let s = unsafe { &mut *state };
    let Some(took) = end_interval(&mut s.marking_start_begin_ns) else { return 0 };
    s.marking_start_ns = took;
    // SAFETY (in the closure): raw field addresses of a valid map value.
    add_to_totals(pid_tgid, took, |t| unsafe {
        (&raw mut (*t).marking_starts, &raw mut (*t).marking_start_ns)
    });
    0
}

#[uprobe]
pub fn gc_prologue_callbacks(ctx: ProbeContext) -> u32 {
    // Heap::CallGCPrologueCallbacks(this, GCType type, ...).
    if ctx.arg::<u32>(1) != Some(GC_TYPE_PROCESS_WEAK_CALLBACKS) {
        return 0;
    }
    if let Some((_, state)) = thread_state(true) {
        // SAFETY: as in gc_collect_garbage.
        unsafe { (*state).weak_begin_ns = now() };
    }
    0
}

#[uprobe]
pub fn gc_epilogue_callbacks(ctx: ProbeContext) -> u32 {
    if ctx.arg::<u32>(1) != Some(GC_TYPE_PROCESS_WEAK_CALLBACKS) {
        return 0;
    }
    let Some((pid_tgid, state)) = thread_state(false) else { return 0 };
    // SAFETY: as in gc_collect_garbage.
    let Some(took) = end_interval(unsafe { &mut (*state).weak_begin_ns }) else { return 0 };
    // SAFETY (in the closure): raw field addresses of a valid map value.
    add_to_totals(pid_tgid, took, |t| unsafe {
        (&raw mut (*t).weak_callbacks, &raw mut (*t).weak_callback_ns)
    });
    0
}

/// V8 gives up: `V8::FatalProcessOutOfMemory` ("JavaScript heap out of
/// memory"). The process aborts right after, so this is streamed with a
/// wakeup, with the process's memory read now; one overload may call
/// another, and userspace counts one per process.
#[uprobe]
pub fn gc_fatal_oom(_ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if TRACED.get_ptr(&((pid_tgid >> 32) as u32)).is_none() {
        return 0;
    }
    send(&V8OomEvent { header: header(kind::V8_OOM, pid_tgid), memory: memory() }, 0);
    0
}
