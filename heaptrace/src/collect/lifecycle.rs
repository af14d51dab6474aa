//! The collector's decisions, pure: which processes to bring in, what each
//! kernel event means for the traced set, when a process missing from
//! `/proc` counts as exited, how a cgroup is judged, and when to look for a
//! late-mapped V8 again. Events and facts go in; [`Action`]s come out, for
//! the loop in [`super`] to carry out. No aya, no tokio, no `/proc`: the
//! loop reads the facts and reports what its actions found.
//!
//! A node process started under `--comm node`, step by step:
//! 1. the kernel adds it at exec; its `Exec { traced }` event comes here
//!    ([`Lifecycle::on_event`]), which answers [`Action::Trace`];
//! 2. the loop holds it still if its binary is new, reads its baseline from
//!    `/proc`, attaches the V8 probes (`crate::v8`), and reports
//!    ([`Lifecycle::traced`]), which answers [`Action::Apply`] of the attach;
//! 3. its GC events then go to the model like any other event.

use std::collections::{HashMap, HashSet};

use crate::{
    core::{Event, EventKind, Input, ProcessInfo, Sample, input::Origin},
    host::{ProcessError, select::Selection},
};

/// A process missing from /proc for this many intervals without an exit
/// event is taken as gone (the exit event can be lost only to a full buffer).
pub const MISSING_INTERVALS_BEFORE_EXIT: u32 = 2;

/// How many intervals to keep looking for V8 in a process exec'd without
/// it: a distribution's node maps `libnode.so` only after the dynamic
/// loader ran, so its executable alone has no V8.
pub const V8_RETRIES: u8 = 3;

/// Unreadable pids remembered (a bound: the set is cleared when full).
pub const SKIPPED_KEPT: usize = 4096;

/// How a process enters the kernel's traced set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The kernel added it at exec or fork: it matched the selection.
    ByKernel,
    /// Named with `--pid`: the collector adds it; failing to read it is an
    /// error, and V8 problems are always said.
    Named,
    /// Found by the selection in userspace (the `/proc` scan, a cgroup
    /// decision): the collector adds it, and it is followed (its forks, and
    /// a check at its next exec).
    Selected,
}

/// What an exec event said about a process, for one that is gone before
/// `/proc` can be read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub comm: String,
    pub cgroup_id: u64,
}

/// Bring a process in: add it to the kernel's traced set (unless the kernel
/// did), hold it if its binary is new, read its `/proc` baseline, find its
/// container, attach V8 probes. Answered with [`Lifecycle::traced`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceRequest {
    pub pid: u32,
    pub origin: Origin,
    pub admission: Admission,
    pub seen: Option<Seen>,
}

/// What bringing a process in found.
#[derive(Debug)]
pub enum TraceOutcome {
    /// The kernel would not add it to the traced set.
    KernelRefused(String),
    /// Its baseline (with `gc_probes` telling whether V8 probes cover it).
    Read(Box<ProcessInfo>),
    /// Gone before `/proc` could be read.
    Gone { ts_ns: u64 },
    /// `/proc` refused it (pid 1 refuses its maps even to root).
    Unreadable(ProcessError),
}

/// What the loop must do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Feed the model.
    Apply(Input),
    Trace(TraceRequest),
    /// Read the cgroup of an exec the kernel could not judge; answered
    /// with [`Lifecycle::cgroup_read`].
    ReadCgroup {
        pid: u32,
        seen: Seen,
    },
    /// Tell the kernel the verdict on a cgroup, so that it judges the next
    /// exec there by itself.
    SetCgroupVerdict {
        cgroup_id: u64,
        selected: bool,
    },
    /// Take a process out of the kernel's traced set and detach its own V8
    /// probes.
    Untrace(u32),
    /// Detach the V8 probes placed for this process alone: the image they
    /// were placed in is gone (exit, exec).
    DetachV8(u32),
    /// Look for V8 in the process again; answered with
    /// [`Lifecycle::v8_retried`].
    RetryV8(u32),
    /// Read V8's heap limit from the process, for the isolate whose `Heap`
    /// is at `heap`; the loop applies [`Input::HeapLimit`].
    ReadHeapLimit {
        pid: u32,
        heap: u64,
    },
    /// Say this on stderr; `verbose`: only with `--verbose`.
    Say {
        text: String,
        verbose: bool,
    },
}

/// The collector's own per-process bookkeeping (the model keeps the rest).
#[derive(Debug)]
pub struct Lifecycle {
    selection: Selection,
    /// Intervals each pid has been missing from /proc.
    missing: HashMap<u32, u32>,
    /// Processes exec'd without V8 found yet, and the looks left.
    v8_retries: HashMap<u32, u8>,
    /// Selected processes that could not be read: not tried again by the
    /// rescan, nor reported again.
    skipped: HashSet<u32>,
    /// Live processes whose V8 heap limit was asked for (once each: the
    /// limit does not change in a process's life).
    limit_asked: HashSet<u32>,
}

fn say(text: String) -> Action {
    Action::Say { text, verbose: false }
}

impl Lifecycle {
    pub fn new(selection: Selection) -> Self {
        Self {
            selection,
            missing: HashMap::new(),
            v8_retries: HashMap::new(),
            skipped: HashSet::new(),
            limit_asked: HashSet::new(),
        }
    }

    pub fn selection(&self) -> &Selection {
        &self.selection
    }

    /// The processes named with `--pid`, to bring in at start.
    pub fn start(&self) -> Vec<Action> {
        let named =
            |pid| TraceRequest { pid, origin: Origin::Start, admission: Admission::Named, seen: None };
        self.selection.pids.iter().map(|&pid| Action::Trace(named(pid))).collect()
    }

    /// Running processes the selection picks (`candidates`, from the
    /// `/proc` scan) that are not traced yet and were not refused before.
    pub fn rescan(&self, candidates: &[u32], is_live: &dyn Fn(u32) -> bool) -> Vec<Action> {
        candidates
            .iter()
            .filter(|&&pid| !is_live(pid) && !self.skipped.contains(&pid))
            .map(|&pid| {
                Action::Trace(TraceRequest {
                    pid,
                    origin: Origin::Start,
                    admission: Admission::Selected,
                    seen: None,
                })
            })
            .collect()
    }

    /// One kernel event; its actions are appended to `actions`. `is_live`:
    /// whether the model traces a pid now. Called for every event (most are
    /// memory syscalls, which only go to the model), so it allocates nothing
    /// of its own.
    pub fn on_event(&mut self, event: Event, is_live: &dyn Fn(u32) -> bool, actions: &mut Vec<Action>) {
        let pid = event.pid;
        match &event.kind {
            EventKind::Exec { comm, traced, was_traced, undecided } => {
                let seen = Seen { comm: comm.clone(), cgroup_id: event.cgroup_id };
                let (traced, was_traced, undecided) = (*traced, *was_traced, *undecided);
                if was_traced {
                    // Probes placed in the old program's binary for this
                    // process alone are of no use to the new one.
                    actions.push(Action::DetachV8(pid));
                    self.clear(pid);
                }
                actions.push(Action::Apply(Input::Event(event)));
                if traced {
                    let request = TraceRequest {
                        pid,
                        origin: Origin::Exec,
                        admission: Admission::ByKernel,
                        seen: Some(seen),
                    };
                    actions.push(Action::Trace(request));
                } else if undecided {
                    actions.push(Action::ReadCgroup { pid, seen });
                }
            }
            EventKind::Fork { parent_pid, .. } => {
                // A fork copies the parent's address space: the model builds
                // the child from the parent's state, exactly, even if the
                // child is gone already. Without the parent, read the child.
                if is_live(*parent_pid) {
                    actions.push(Action::Apply(Input::Event(event)));
                } else {
                    let request = TraceRequest {
                        pid,
                        origin: Origin::Fork,
                        admission: Admission::ByKernel,
                        seen: None,
                    };
                    actions.push(Action::Trace(request));
                }
            }
            EventKind::Exit { .. } => {
                // The kernel dropped it from its maps already; only probes
                // placed for it alone remain.
                self.clear(pid);
                actions.push(Action::Apply(Input::Event(event)));
                actions.push(Action::DetachV8(pid));
            }
            // The main isolate's first GC brings the address of its `Heap`,
            // where V8's heap limit is read.
            EventKind::Gc(pause) if event.tid == pid && pause.heap != 0 && self.limit_asked.insert(pid) => {
                actions.push(Action::ReadHeapLimit { pid, heap: pause.heap });
                actions.push(Action::Apply(Input::Event(event)));
            }
            _ => actions.push(Action::Apply(Input::Event(event))),
        }
    }

    /// The cgroup path of an undecided exec (None: the process is gone):
    /// judge it once for the kernel, and trace the process if it matches.
    pub fn cgroup_read(&mut self, pid: u32, seen: Seen, path: Option<&str>) -> Vec<Action> {
        let Some(path) = path else { return Vec::new() };
        let selected = self.selection.cgroup_matches(path);
        let mut actions = vec![Action::SetCgroupVerdict { cgroup_id: seen.cgroup_id, selected }];
        if selected && self.selection.matches(&seen.comm, Some(path)) {
            let request =
                TraceRequest { pid, origin: Origin::Exec, admission: Admission::Selected, seen: Some(seen) };
            actions.push(Action::Trace(request));
        }
        actions
    }

    /// What bringing a process in found. An error only for a process named
    /// with `--pid` that `/proc` refuses: that ends the run.
    pub fn traced(
        &mut self,
        request: TraceRequest,
        outcome: TraceOutcome,
    ) -> Result<Vec<Action>, ProcessError> {
        let pid = request.pid;
        let named = request.admission == Admission::Named;
        Ok(match outcome {
            TraceOutcome::KernelRefused(why) => {
                vec![say(format!("pid {pid}: cannot add it to the traced set ({why}); skipping it"))]
            }
            TraceOutcome::Read(info) => {
                self.missing.remove(&pid);
                if !info.gc_probes && request.origin != Origin::Start {
                    self.v8_retries.insert(pid, V8_RETRIES);
                }
                vec![Action::Apply(Input::Attach(info))]
            }
            // The kernel dropped it from its set at exit.
            TraceOutcome::Gone { ts_ns } => match request.seen {
                _ if named => {
                    vec![Action::Untrace(pid), say(format!("pid {pid} exited before tracing started"))]
                }
                // It exec'd and exited before /proc could be read: its
                // events (maps, exit) are still in the buffer, so it enters
                // the model with what the exec event said.
                Some(Seen { comm, cgroup_id }) if request.origin == Origin::Exec => {
                    let info = ProcessInfo {
                        pid,
                        comm,
                        ts_ns,
                        origin: Origin::Exec,
                        cgroup_id,
                        ..Default::default()
                    };
                    vec![Action::Apply(Input::Attach(Box::new(info)))]
                }
                _ => Vec::new(),
            },
            TraceOutcome::Unreadable(e) if named => return Err(e),
            TraceOutcome::Unreadable(e) => {
                if self.skipped.len() >= SKIPPED_KEPT {
                    self.skipped.clear();
                }
                self.skipped.insert(pid);
                vec![Action::Untrace(pid), say(format!("skipping pid {pid}: {e}"))]
            }
        })
    }

    /// One live process's readings at an interval (`status` None: gone
    /// from `/proc`). A process missing for [`MISSING_INTERVALS_BEFORE_EXIT`]
    /// intervals without an exit event exited: its exit event was lost to a
    /// full buffer. A process exec'd without V8 is looked at again.
    pub fn sampled(&mut self, sample: Sample) -> Vec<Action> {
        let pid = sample.pid;
        let mut actions = Vec::new();
        if sample.status.is_none() {
            let missing = self.missing.entry(pid).or_default();
            *missing += 1;
            if *missing >= MISSING_INTERVALS_BEFORE_EXIT {
                self.clear(pid);
                let kind = EventKind::Exit {
                    calls: sample.calls,
                    gc_work: sample.gc_work.unwrap_or_default(),
                    exit_code: None,
                };
                let exit = Event { pid, tid: pid, ts_ns: sample.ts_ns, cgroup_id: 0, kind };
                return vec![
                    Action::Say {
                        text: format!("pid {pid} is gone without an exit event; taking it as exited"),
                        verbose: true,
                    },
                    Action::Apply(Input::Event(exit)),
                    Action::Untrace(pid),
                ];
            }
        }
        if let Some(tries) = self.v8_retries.get_mut(&pid) {
            *tries -= 1;
            if *tries == 0 {
                self.v8_retries.remove(&pid);
            }
            actions.push(Action::RetryV8(pid));
        }
        actions.push(Action::Apply(Input::Sample(sample)));
        actions
    }

    /// Whether the look for V8 found it this time.
    pub fn v8_retried(&mut self, pid: u32, probed: bool, ts_ns: u64) -> Vec<Action> {
        if !probed {
            return Vec::new();
        }
        self.v8_retries.remove(&pid);
        vec![Action::Apply(Input::GcProbesAttached { pid, ts_ns })]
    }

    /// Drops what the collector kept about a process that is gone.
    fn clear(&mut self, pid: u32) {
        self.missing.remove(&pid);
        self.v8_retries.remove(&pid);
        self.limit_asked.remove(&pid);
    }

    /// Pids with per-process state, for the tests to show that it stays
    /// bounded.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.missing.len() + self.v8_retries.len() + self.limit_asked.len()
    }
}

#[cfg(test)]
mod tests;
