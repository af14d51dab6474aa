//! The collector: one task that owns the model and `select!`s over the ring
//! buffer, a drain tick, the snapshot interval, the deadline and signals.
//! Edges (kernel, /proc) produce core inputs; records go to the sink.

use std::{
    collections::{BTreeMap, HashMap},
    io,
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{Instant, MissedTickBehavior, interval, sleep_until},
};

use crate::{
    cli::Config,
    clock,
    core::{
        Event, EventKind, Input, Model, ModelConfig, ProcessInfo, Record, Sample,
        container::parse_cgroup_path, input::Origin, record::Started,
    },
    kernel::{GcScope, Tracer},
    output::{CollectorStats, Sink},
    symbols::{SymbolCache, V8Lookup},
    target::{
        self, hold,
        names::{self, ContainerNames},
        select::Selection,
    },
};

/// A process missing from /proc for this many intervals without an exit
/// event is taken as gone (the exit event can be lost only to a full buffer).
const MISSING_INTERVALS_BEFORE_EXIT: u32 = 2;

/// Why tracing stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    Deadline,
    Signal,
    AllExited,
    /// The output's reader went away.
    OutputClosed,
}

pub async fn run(config: Config, sink: &mut dyn Sink) -> Result<Stop> {
    let selection = config.selection.clone();
    // Unknown pids are refused before anything is loaded.
    for &pid in &selection.pids {
        target::check_exists(pid)?;
    }
    let mut tracer = Tracer::load(config.mem_hook, config.ring_buffer_bytes, &selection.kernel())?;
    if config.verbose {
        eprintln!("heaptrace: memory hook: {}", tracer.mem_hook());
        for note in tracer.notes() {
            eprintln!("heaptrace: note: {note}");
        }
    }

    let mut model = Model::new(ModelConfig {
        page_size: clock::page_size(),
        large_threshold: config.large_threshold,
        wall_offset_ns: clock::wall_offset_ns(),
        mem_hook: tracer.mem_hook().to_owned(),
        group_all: selection.follows(),
    });
    let mut collector = Collector {
        tracer: &mut tracer,
        model: &mut model,
        sink,
        missing: HashMap::new(),
        symbols: SymbolCache::default(),
        names: names::default_lookup(),
        gc_scope: if selection.follows() { GcScope::Binary } else { GcScope::Process },
        gc_retry: HashMap::new(),
        skipped: Default::default(),
        probe_attach_failures: 0,
        selection,
        verbose: config.verbose,
    };

    let mut out = Vec::new();
    for pid in collector.selection.pids.clone() {
        // Named processes: failing to read one is an error, not a warning.
        collector.start_tracing(pid, Origin::Start, Some(false), None, &mut out)?;
    }
    if collector.selection.follows() {
        collector.rescan(&mut out);
        if !collector.model.any_live() {
            eprintln!("heaptrace: no matching process is running yet; waiting for one to start");
        }
    } else if !collector.model.any_live() {
        anyhow::bail!("none of the given processes is running any more");
    }
    let started = Record::Start(Started {
        ts: clock::wall_now(),
        selection: collector.selection.describe(),
        follows_new_processes: collector.selection.follows(),
        processes: collector.model.live_pids().len(),
        mem_hook: collector.tracer.mem_hook().to_owned(),
    });
    collector.emit(&[started]).context("writing output")?;
    collector.emit(&out).context("writing output")?;

    let stop = collector.main_loop(&config).await;
    let stop = match stop {
        Ok(stop) => stop,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(Stop::OutputClosed),
        Err(e) => return Err(e).context("writing output"),
    };
    match collector.finish() {
        Ok(()) => Ok(stop),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Stop::OutputClosed),
        Err(e) => Err(e).context("writing output"),
    }
}

/// How often a selection re-scans /proc, for processes that joined it
/// without an exec or fork (moved into a selected cgroup, renamed) or whose
/// exec event was lost.
const RESCAN_EVERY: Duration = Duration::from_secs(10);

/// Unreadable pids remembered (a bound: the set is cleared when full).
const SKIPPED_KEPT: usize = 4096;

/// How many intervals to keep looking for V8 in a new process whose
/// executable has none: a distribution's node maps libnode.so only after
/// the dynamic loader ran.
const GC_RETRIES: u8 = 3;

struct Collector<'a> {
    tracer: &'a mut Tracer,
    model: &'a mut Model,
    sink: &'a mut dyn Sink,
    /// Intervals each pid has been missing from /proc.
    missing: HashMap<u32, u32>,
    symbols: SymbolCache,
    names: names::Chain,
    gc_scope: GcScope,
    /// New processes without V8 found yet, and the tries left.
    gc_retry: HashMap<u32, u8>,
    /// Selected processes that could not be read (pid 1 refuses its maps
    /// even to root): not tried again by the rescan, nor reported again.
    skipped: std::collections::HashSet<u32>,
    /// Processes whose GC probes could not be attached (not: no V8).
    probe_attach_failures: u64,
    selection: Selection,
    verbose: bool,
}

impl Collector<'_> {
    /// Brings one process into the model: its place in the kernel's traced
    /// set (`follow`: Some when heaptrace must add it; None when the kernel
    /// already did), its memory map as the baseline, its container, its GC
    /// probes. Returns an error only for named pids; a selected process
    /// that cannot be read is reported and skipped.
    fn start_tracing(
        &mut self,
        pid: u32,
        origin: Origin,
        follow: Option<bool>,
        seen: Option<(String, u64)>,
        out: &mut Vec<Record>,
    ) -> Result<(), target::TargetError> {
        let named = follow == Some(false);
        if let Some(follow) = follow
            && let Err(e) = self.tracer.trace(pid, follow)
        {
            eprintln!("heaptrace: pid {pid}: cannot add it to the traced set ({e}); skipping it");
            return Ok(());
        }
        // Into the kernel's traced set first, then read the baseline: events
        // that race the read are applied on top of it, which is idempotent.
        // A just-exec'd process of a binary not seen before is held still
        // while its symbols are read (see target::hold).
        let held = (origin == Origin::Exec && !self.symbols.knows_executable(pid)).then(|| hold::hold(pid));
        if let Some(Err(why)) = &held
            && self.verbose
        {
            eprintln!("heaptrace: pid {pid}: not held while its GC probes are attached ({why})");
        }
        match target::process_info(pid, clock::monotonic_ns()) {
            Ok(mut info) => {
                info.origin = origin;
                info.container = info.cgroup_path.as_deref().and_then(parse_cgroup_path).map(|mut c| {
                    self.names.name(&mut c);
                    c
                });
                let comm = info.comm.clone();
                info.gc_probes = self.attach_gc_probes(pid, &comm, named);
                if let Some(Ok(h)) = &held
                    && self.verbose
                {
                    eprintln!(
                        "heaptrace: pid {pid}: held {:.0} ms while its GC probes were attached",
                        h.held_ms()
                    );
                }
                drop(held);
                if !info.gc_probes && origin != Origin::Start {
                    self.gc_retry.insert(pid, GC_RETRIES);
                }
                self.missing.remove(&pid);
                self.model.apply(Input::Attach(info), out);
                Ok(())
            }
            Err(target::TargetError::NoSuchProcess(_)) => {
                drop(held);
                // Gone already: the kernel dropped it at exit.
                if named {
                    self.tracer.untrace(pid);
                    eprintln!("heaptrace: pid {pid} exited before tracing started");
                } else if origin == Origin::Exec {
                    // It exec'd and exited before /proc could be read: its
                    // events (maps, exit) are still in the buffer, so it
                    // enters the model with what the exec event said.
                    let (comm, cgroup_id) = seen.unwrap_or_default();
                    let ts_ns = clock::monotonic_ns();
                    let info = ProcessInfo { pid, comm, ts_ns, origin, cgroup_id, ..Default::default() };
                    self.model.apply(Input::Attach(info), out);
                }
                Ok(())
            }
            Err(e) if named => Err(e),
            Err(e) => {
                drop(held);
                self.tracer.untrace(pid);
                eprintln!("heaptrace: skipping pid {pid}: {e}");
                if self.skipped.len() >= SKIPPED_KEPT {
                    self.skipped.clear();
                }
                self.skipped.insert(pid);
                Ok(())
            }
        }
    }

    /// Finds V8 in the process and attaches the GC probes. When it cannot,
    /// says why on stderr (for named processes, or with --verbose: a
    /// host-wide trace meets many processes that are not Node) and returns
    /// false: memory tracing goes on regardless.
    fn attach_gc_probes(&mut self, pid: u32, comm: &str, named: bool) -> bool {
        let say = named || self.verbose;
        let v8 = match self.symbols.find_in_process(pid) {
            Ok(V8Lookup::Found(v8)) => v8,
            Ok(V8Lookup::NotFound { looked_at }) => {
                if say {
                    let files: Vec<String> = looked_at
                        .iter()
                        .map(|(path, id)| format!("{path} (build-id {})", id.as_deref().unwrap_or("none")))
                        .collect();
                    eprintln!(
                        "heaptrace: pid {pid} ({comm}): no V8 garbage-collector symbols in {}: not a Node.js \
                         process, or a stripped binary; tracing memory only",
                        files.join(", ")
                    );
                }
                return false;
            }
            Err(e) => {
                if say {
                    eprintln!(
                        "heaptrace: pid {pid} ({comm}): cannot read its binary for V8 symbols ({e}); tracing \
                         memory only"
                    );
                }
                return false;
            }
        };
        let first_for_binary = self.gc_scope == GcScope::Process || !self.tracer.gc_covers(v8.file);
        match self.tracer.attach_gc(pid, &v8, self.gc_scope) {
            Ok(report) => {
                if first_for_binary && !report.missing.is_empty() {
                    eprintln!(
                        "heaptrace: pid {pid} ({comm}): V8 functions not found in {}: {} (their figures will be \
                         missing)",
                        v8.display_path,
                        report.missing.join(", ")
                    );
                }
                if self.verbose && first_for_binary {
                    eprintln!(
                        "heaptrace: pid {pid}: GC probes on {} (build-id {}, {}, {}): {}",
                        v8.display_path,
                        v8.symbols.build_id.as_deref().unwrap_or("none"),
                        if report.v8_timestamps { "V8's own pause timestamps" } else { "kernel timestamps" },
                        match self.gc_scope {
                            GcScope::Process => "this process only",
                            GcScope::Binary => "every process of this binary",
                        },
                        report.attached.join(", ")
                    );
                }
                true
            }
            Err(e) => {
                self.probe_attach_failures += 1;
                eprintln!(
                    "heaptrace: pid {pid} ({comm}): GC probes could not be attached ({e:#}); tracing memory only"
                );
                false
            }
        }
    }

    /// Adds running processes that match the selection and are not traced.
    fn rescan(&mut self, out: &mut Vec<Record>) {
        for pid in target::select::scan(&self.selection) {
            if !self.model.is_live(pid) && !self.skipped.contains(&pid) {
                let _ = self.start_tracing(pid, Origin::Start, Some(true), None, out);
            }
        }
    }

    async fn main_loop(&mut self, config: &Config) -> io::Result<Stop> {
        let deadline = config.duration.map(|d| Instant::now() + d);
        let mut snapshot_tick = interval(config.interval);
        snapshot_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Events are submitted without wakeups (see heaptrace-common), so
        // this bounds how stale the event stream can be.
        let mut drain_tick = interval(config.drain_every);
        drain_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut rescan_tick = interval(RESCAN_EVERY);
        rescan_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        snapshot_tick.tick().await; // the first tick is immediate: skip it
        rescan_tick.tick().await;
        let follows = self.selection.follows();

        loop {
            tokio::select! {
                _ = sigint.recv() => return Ok(Stop::Signal),
                _ = sigterm.recv() => return Ok(Stop::Signal),
                _ = until(deadline) => return Ok(Stop::Deadline),
                ready = self.tracer.readable() => {
                    ready?;
                    self.drain()?;
                }
                _ = drain_tick.tick() => self.drain()?,
                _ = snapshot_tick.tick() => {
                    self.drain()?;
                    self.sample()?;
                    let mut out = Vec::new();
                    self.model.snapshots(clock::monotonic_ns(), &mut out);
                    self.emit(&out)?;
                    let (kernel, undecodable) = self.tracer.drops();
                    self.sink.tick(&CollectorStats {
                        now_ns: clock::monotonic_ns(),
                        events: self.tracer.decoded(),
                        dropped: kernel + undecodable,
                        probe_attach_failures: self.probe_attach_failures,
                        model: self.model.size(),
                    });
                }
                _ = rescan_tick.tick(), if follows => {
                    let mut out = Vec::new();
                    self.rescan(&mut out);
                    self.emit(&out)?;
                }
            }
            if !follows && !self.model.any_live() {
                return Ok(Stop::AllExited);
            }
        }
    }

    /// Applies every waiting kernel event, and brings processes that exec'd
    /// or forked into the selection into the model.
    fn drain(&mut self) -> io::Result<()> {
        let mut events = Vec::new();
        self.tracer.drain(&mut events);
        let mut out = Vec::new();
        for event in events {
            let pid = event.pid;
            match &event.kind {
                EventKind::Exec { comm, traced, undecided, was_traced } => {
                    let (comm, traced, undecided) = (comm.clone(), *traced, *undecided);
                    let cgroup_id = event.cgroup_id;
                    if *was_traced {
                        // Probes on the old program's binary (per-process
                        // scope) are of no use to the new one.
                        self.tracer.forget(pid);
                    }
                    self.model.apply(Input::Event(event), &mut out);
                    if traced {
                        let seen = Some((comm, cgroup_id));
                        let _ = self.start_tracing(pid, Origin::Exec, None, seen, &mut out);
                    } else if undecided {
                        self.decide(pid, &comm, cgroup_id, &mut out);
                    }
                }
                EventKind::Fork { parent_pid, .. } => {
                    // A fork copies the parent's address space: the model
                    // builds the child from the parent's state, exactly, and
                    // even if the child is gone already.
                    if self.model.can_fork(*parent_pid) {
                        self.model.apply(Input::Event(event), &mut out);
                    } else {
                        let _ = self.start_tracing(pid, Origin::Fork, None, None, &mut out);
                    }
                }
                EventKind::Exit { .. } => {
                    self.model.apply(Input::Event(event), &mut out);
                    // The kernel dropped it from its maps; only probes
                    // attached for it alone remain.
                    self.tracer.forget(pid);
                    self.gc_retry.remove(&pid);
                    self.missing.remove(&pid);
                }
                _ => self.model.apply(Input::Event(event), &mut out),
            }
        }
        self.emit(&out)
    }

    /// An exec in a cgroup the kernel has no verdict for: judge the cgroup
    /// by its path, tell the kernel, and trace the process if it matches.
    fn decide(&mut self, pid: u32, comm: &str, cgroup_id: u64, out: &mut Vec<Record>) {
        let Some(path) = target::select::cgroup_path_of(pid) else { return };
        let selected = self.selection.cgroup_matches(&path);
        let _ = self.tracer.set_cgroup_verdict(cgroup_id, selected);
        if selected && self.selection.matches(comm, Some(&path)) {
            let _ =
                self.start_tracing(pid, Origin::Exec, Some(true), Some((comm.to_owned(), cgroup_id)), out);
        }
    }

    /// Reads /proc and the kernel counters for every live process, the
    /// cgroups' memory figures, and the drop counters.
    fn sample(&mut self) -> io::Result<()> {
        let mut out = Vec::new();
        let mut group_member: BTreeMap<String, u32> = BTreeMap::new();
        for (pid, group) in self.model.live_pids_and_groups() {
            let ts_ns = clock::monotonic_ns();
            let status = target::read_status(pid);
            let calls = self.tracer.calls(pid).unwrap_or_default();
            if status.is_none() {
                let missing = self.missing.entry(pid).or_default();
                *missing += 1;
                if *missing >= MISSING_INTERVALS_BEFORE_EXIT {
                    // Gone without an exit event (lost to a full buffer).
                    if self.verbose {
                        eprintln!("heaptrace: pid {pid} is gone without an exit event; taking it as exited");
                    }
                    let gc_work = self.tracer.gc_work(pid).unwrap_or_default();
                    let kind = EventKind::Exit { calls, gc_work };
                    let exit = Event { pid, tid: pid, ts_ns, cgroup_id: 0, kind };
                    self.model.apply(Input::Event(exit), &mut out);
                    self.tracer.untrace(pid);
                    self.missing.remove(&pid);
                    continue;
                }
            } else if !group.is_empty() {
                group_member.entry(group).or_insert(pid);
            }
            if let Some(tries) = self.gc_retry.get_mut(&pid) {
                *tries -= 1;
                let tries = *tries;
                if tries == 0 {
                    self.gc_retry.remove(&pid);
                }
                let comm = String::new();
                if self.attach_gc_probes(pid, &comm, false) {
                    self.model.set_gc_probed(pid);
                    self.gc_retry.remove(&pid);
                }
            }
            let gc_work = self.tracer.gc_work(pid);
            self.model.apply(Input::Sample(Sample { pid, ts_ns, status, calls, gc_work }), &mut out);
        }
        for (path, pid) in group_member {
            if let Some(sample) = target::cgroup::memory(&path, pid, clock::monotonic_ns()) {
                self.model.apply(Input::Cgroup(sample), &mut out);
            }
        }
        let (kernel, undecodable) = self.tracer.drops();
        self.model.apply(Input::Drops { ts_ns: clock::monotonic_ns(), kernel, undecodable }, &mut out);
        self.emit(&out)
    }

    /// Last drain and samples, then the summary.
    fn finish(&mut self) -> io::Result<()> {
        self.drain()?;
        self.sample()?;
        let summary = self.model.summary(clock::monotonic_ns());
        self.emit(&[summary])?;
        for pid in self.model.live_pids() {
            self.tracer.untrace(pid);
        }
        self.sink.flush()
    }

    fn emit(&mut self, records: &[Record]) -> io::Result<()> {
        records.iter().try_for_each(|r| self.sink.record(r))
    }
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}
