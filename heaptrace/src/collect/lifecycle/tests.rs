//! The collector's routing, without root: events and facts in, actions out.

use std::{cell::RefCell, collections::HashSet};

use super::*;
use crate::core::{CallCounts, ProcStatus, input::GcWork};

const NODE_CGROUP: u64 = 77;

fn comm_selection(comm: &str) -> Selection {
    Selection { comms: vec![comm.into()], ..Default::default() }
}

fn event(pid: u32, kind: EventKind) -> Event {
    Event { pid, tid: pid, ts_ns: 1_000, cgroup_id: NODE_CGROUP, kind }
}

fn exec(pid: u32, comm: &str, traced: bool, was_traced: bool, undecided: bool) -> Event {
    event(pid, EventKind::Exec { comm: comm.into(), traced, was_traced, undecided })
}

fn exit(pid: u32) -> Event {
    event(pid, EventKind::Exit { calls: CallCounts::default(), gc_work: GcWork::default(), exit_code: None })
}

fn fork(pid: u32, parent_pid: u32) -> Event {
    event(pid, EventKind::Fork { parent_pid, comm: "node".into() })
}

fn info(pid: u32, gc_probes: bool) -> Box<ProcessInfo> {
    Box::new(ProcessInfo { pid, comm: "node".into(), gc_probes, ..Default::default() })
}

fn sample(pid: u32, present: bool) -> Sample {
    let status = present.then_some(ProcStatus::default());
    Sample { pid, ts_ns: 5_000, status, calls: CallCounts { mmap: 3, ..Default::default() }, gc_work: None }
}

/// The traced set as the model would keep it, for `is_live`.
struct Live(RefCell<HashSet<u32>>);

impl Live {
    fn of(pids: &[u32]) -> Self {
        Self(RefCell::new(pids.iter().copied().collect()))
    }

    fn check(&self) -> impl Fn(u32) -> bool + '_ {
        |pid| self.0.borrow().contains(&pid)
    }
}

/// `on_event`'s actions for one event.
fn route(l: &mut Lifecycle, event: Event, live: &Live) -> Vec<Action> {
    let mut actions = Vec::new();
    l.on_event(event, &live.check(), &mut actions);
    actions
}

fn trace_requests(actions: &[Action]) -> Vec<&TraceRequest> {
    actions.iter().filter_map(|a| if let Action::Trace(r) = a { Some(r) } else { None }).collect()
}

#[test]
fn a_node_exec_is_traced_then_attached_with_its_probes() {
    let mut l = Lifecycle::new(comm_selection("node"));
    let actions = route(&mut l, exec(10, "node", true, false, false), &Live::of(&[]));
    assert!(matches!(&actions[0], Action::Apply(Input::Event(_))));
    let request = TraceRequest {
        pid: 10,
        origin: Origin::Exec,
        admission: Admission::ByKernel,
        seen: Some(Seen { comm: "node".into(), cgroup_id: NODE_CGROUP }),
    };
    assert_eq!(actions[1], Action::Trace(request.clone()));
    assert_eq!(actions.len(), 2);
    let after = l.traced(request, TraceOutcome::Read(info(10, true))).unwrap();
    assert!(matches!(&after[..], [Action::Apply(Input::Attach(i))] if i.pid == 10 && i.gc_probes));
    assert_eq!(l.tracked(), 0, "nothing to retry: probes are in");
}

#[test]
fn a_traced_node_that_execs_into_sh_leaves_and_loses_its_probes() {
    let mut l = Lifecycle::new(comm_selection("node"));
    // The kernel dropped it (sh does not match): was traced, is not.
    let actions = route(&mut l, exec(10, "sh", false, true, false), &Live::of(&[10]));
    assert_eq!(actions[0], Action::DetachV8(10));
    assert!(matches!(&actions[1], Action::Apply(Input::Event(e)) if e.pid == 10));
    assert_eq!(actions.len(), 2, "{actions:?}");
    // And an sh that execs node is traced again, as a new image.
    let actions = route(&mut l, exec(10, "node", true, true, false), &Live::of(&[]));
    assert_eq!(actions[0], Action::DetachV8(10));
    assert_eq!(trace_requests(&actions).len(), 1);
}

#[test]
fn a_named_process_stays_named_and_a_missing_one_is_an_error() {
    let mut l = Lifecycle::new(Selection { pids: vec![4, 9], ..Default::default() });
    let starts = l.start();
    let requests = trace_requests(&starts);
    assert_eq!(
        requests.iter().map(|r| (r.pid, r.admission)).collect::<Vec<_>>(),
        [(4, Admission::Named), (9, Admission::Named)]
    );
    let gone = l.traced(requests[0].clone(), TraceOutcome::Gone { ts_ns: 1 }).unwrap();
    assert_eq!(gone[0], Action::Untrace(4));
    assert!(
        matches!(&gone[1], Action::Say { text, verbose: false } if text.contains("exited before tracing"))
    );
    let refused = ProcessError::Refused { pid: 9, file: "maps" };
    assert!(l.traced(requests[1].clone(), TraceOutcome::Unreadable(refused)).is_err());
}

#[test]
fn a_selected_process_that_cannot_be_read_is_skipped_once() {
    let mut l = Lifecycle::new(comm_selection("node"));
    let live = Live::of(&[]);
    let found = l.rescan(&[1, 20], &live.check());
    let requests = trace_requests(&found);
    assert_eq!(requests.len(), 2);
    let refused = ProcessError::Refused { pid: 1, file: "maps" };
    let actions = l.traced(requests[0].clone(), TraceOutcome::Unreadable(refused)).unwrap();
    assert_eq!(actions[0], Action::Untrace(1));
    assert!(matches!(&actions[1], Action::Say { text, .. } if text.starts_with("skipping pid 1")));
    live.0.borrow_mut().insert(20);
    // The next rescan neither retries pid 1 nor re-adds the live pid 20.
    assert!(
        l.rescan(&[1, 20, 30], &live.check()).iter().all(|a| matches!(a, Action::Trace(r) if r.pid == 30))
    );
}

#[test]
fn a_fork_storm_is_built_from_the_parents_and_leaves_no_state() {
    let mut l = Lifecycle::new(comm_selection("churn"));
    let live = Live::of(&[100]);
    for child in 1000..1200 {
        let actions = route(&mut l, fork(child, 100), &live);
        // The model copies the traced parent: no /proc read, no trace.
        assert!(matches!(&actions[..], [Action::Apply(Input::Event(e))] if e.pid == child));
        live.0.borrow_mut().insert(child);
    }
    for child in 1000..1200 {
        let actions = route(&mut l, exit(child), &live);
        assert_eq!(actions[1], Action::DetachV8(child));
        live.0.borrow_mut().remove(&child);
    }
    // A fork of a parent the model does not trace is read from /proc.
    let actions = route(&mut l, fork(2000, 555), &live);
    assert!(
        matches!(&trace_requests(&actions)[..], [r] if r.origin == Origin::Fork && r.admission == Admission::ByKernel)
    );
    assert_eq!(l.tracked(), 0);
}

#[test]
fn a_pid_that_vanishes_without_an_exit_event_is_taken_as_exited() {
    let mut l = Lifecycle::new(comm_selection("node"));
    // Present, then missing once: still sampled.
    assert!(matches!(&l.sampled(sample(10, true))[..], [Action::Apply(Input::Sample(_))]));
    assert!(matches!(&l.sampled(sample(10, false))[..], [Action::Apply(Input::Sample(_))]));
    // Missing twice: a synthetic exit with the kernel's last counters.
    let actions = l.sampled(sample(10, false));
    assert!(matches!(&actions[0], Action::Say { verbose: true, .. }));
    let Action::Apply(Input::Event(Event { kind: EventKind::Exit { calls, .. }, pid: 10, .. })) = &actions[1]
    else {
        panic!("{actions:?}")
    };
    assert_eq!(calls.mmap, 3);
    assert_eq!(actions[2], Action::Untrace(10));
    assert_eq!(l.tracked(), 0);
}

#[test]
fn a_late_libnode_is_looked_for_again_for_three_intervals() {
    let mut l = Lifecycle::new(comm_selection("node"));
    let request = TraceRequest { pid: 10, origin: Origin::Exec, admission: Admission::ByKernel, seen: None };
    // Exec'd without V8 found: libnode.so is not mapped yet.
    l.traced(request.clone(), TraceOutcome::Read(info(10, false))).unwrap();
    let first = l.sampled(sample(10, true));
    assert_eq!(first[0], Action::RetryV8(10));
    assert!(l.v8_retried(10, false, 2).is_empty());
    // Found on the second look: the model learns it, and looking stops.
    assert_eq!(l.sampled(sample(10, true))[0], Action::RetryV8(10));
    assert_eq!(l.v8_retried(10, true, 3), vec![Action::Apply(Input::GcProbesAttached { pid: 10, ts_ns: 3 })]);
    assert!(matches!(&l.sampled(sample(10, true))[..], [Action::Apply(Input::Sample(_))]));

    // Never found: three looks, then no more.
    l.traced(TraceRequest { pid: 11, ..request }, TraceOutcome::Read(info(11, false))).unwrap();
    let looks = (0..5).filter(|_| l.sampled(sample(11, true)).contains(&Action::RetryV8(11))).count();
    assert_eq!(looks, usize::from(V8_RETRIES));
    // Processes found at start are not looked at again (their loader ran long ago).
    let at_start =
        TraceRequest { pid: 12, origin: Origin::Start, admission: Admission::Selected, seen: None };
    l.traced(at_start, TraceOutcome::Read(info(12, false))).unwrap();
    assert!(!l.sampled(sample(12, true)).contains(&Action::RetryV8(12)));
}

#[test]
fn an_undecided_cgroup_is_judged_once_and_its_process_traced_if_it_matches() {
    let selection =
        Selection { comms: vec!["node".into()], cgroups: vec!["/kubepods".into()], ..Default::default() };
    let mut l = Lifecycle::new(selection);
    let actions = route(&mut l, exec(10, "node", false, false, true), &Live::of(&[]));
    let seen = Seen { comm: "node".into(), cgroup_id: NODE_CGROUP };
    assert_eq!(actions[1], Action::ReadCgroup { pid: 10, seen: seen.clone() });
    let inside = l.cgroup_read(10, seen.clone(), Some("/kubepods/pod1/c1"));
    assert_eq!(inside[0], Action::SetCgroupVerdict { cgroup_id: NODE_CGROUP, selected: true });
    assert!(
        matches!(&inside[1], Action::Trace(r) if r.admission == Admission::Selected && r.origin == Origin::Exec)
    );
    // The cgroup matches but the comm does not: the verdict is still cached.
    let other = l.cgroup_read(11, Seen { comm: "bash".into(), cgroup_id: 5 }, Some("/kubepods/pod1/c1"));
    assert_eq!(other, vec![Action::SetCgroupVerdict { cgroup_id: 5, selected: true }]);
    let outside = l.cgroup_read(12, Seen { comm: "node".into(), cgroup_id: 6 }, Some("/system.slice/x"));
    assert_eq!(outside, vec![Action::SetCgroupVerdict { cgroup_id: 6, selected: false }]);
    // Gone before its cgroup could be read: nothing to decide.
    assert!(l.cgroup_read(13, seen, None).is_empty());
}

#[test]
fn an_exec_gone_before_proc_is_read_enters_from_its_exec_event() {
    let mut l = Lifecycle::new(comm_selection("node"));
    let seen = Seen { comm: "node".into(), cgroup_id: NODE_CGROUP };
    let request = TraceRequest {
        pid: 10,
        origin: Origin::Exec,
        admission: Admission::ByKernel,
        seen: Some(seen.clone()),
    };
    let actions = l.traced(request, TraceOutcome::Gone { ts_ns: 42 }).unwrap();
    let [Action::Apply(Input::Attach(info))] = &actions[..] else { panic!("{actions:?}") };
    assert_eq!((info.pid, info.comm.as_str(), info.cgroup_id, info.ts_ns), (10, "node", NODE_CGROUP, 42));
    // A fork child gone as fast is already in the model (built from its parent).
    let fork = TraceRequest { pid: 11, origin: Origin::Fork, admission: Admission::ByKernel, seen: None };
    assert!(l.traced(fork, TraceOutcome::Gone { ts_ns: 42 }).unwrap().is_empty());
}

#[test]
fn a_process_the_kernel_refuses_is_reported_and_skipped() {
    let mut l = Lifecycle::new(comm_selection("node"));
    let request = TraceRequest { pid: 10, origin: Origin::Start, admission: Admission::Selected, seen: None };
    let actions = l.traced(request, TraceOutcome::KernelRefused("map full".into())).unwrap();
    assert!(matches!(&actions[..], [Action::Say { text, verbose: false }] if text.contains("map full")));
}

#[test]
fn the_heap_limit_is_read_once_at_the_main_isolates_first_gc() {
    let mut l = Lifecycle::new(comm_selection("node"));
    let live = Live::of(&[10]);
    let gc = |tid: u32, heap: u64| {
        let pause = crate::core::input::GcPause {
            pause_ns: 1,
            heap_before: 2,
            heap_after: 1,
            collector: Some(0),
            reason: None,
            v8_timestamps: true,
            marking_steps: 0,
            marking_step_ns: 0,
            marking_start_ns: 0,
            heap,
        };
        Event { tid, ..event(10, EventKind::Gc(pause)) }
    };
    let reads =
        |actions: &[Action]| actions.iter().filter(|a| matches!(a, Action::ReadHeapLimit { .. })).count();
    // A worker's GC: its heap has a limit of its own.
    assert_eq!(reads(&route(&mut l, gc(11, 0xaaa), &live)), 0);
    // Without the Heap*, nothing to read from.
    assert_eq!(reads(&route(&mut l, gc(10, 0), &live)), 0);
    let first = route(&mut l, gc(10, 0xbbb), &live);
    assert_eq!(first[0], Action::ReadHeapLimit { pid: 10, heap: 0xbbb });
    assert!(matches!(first[1], Action::Apply(Input::Event(_))));
    assert_eq!(reads(&route(&mut l, gc(10, 0xbbb), &live)), 0, "once per process");
    // Its exit forgets it.
    route(&mut l, exit(10), &live);
    assert_eq!(l.tracked(), 0);
}
