//! The collector: one task that owns the model and `select!`s over the ring
//! buffer, a drain tick, the snapshot interval, the rescan, the deadline
//! and signals. Every decision is [`lifecycle`]'s (pure, unit-tested); this
//! loop does the I/O: it feeds events and facts in and carries the
//! [`Action`]s out, against the kernel ([`Tracer`]), V8 ([`V8Support`]),
//! `/proc` ([`host`]) and the model. Records go to the sink.

mod exports;
pub mod lifecycle;
pub mod on_leak;

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    time::Duration,
};

use anyhow::{Context, Result};
use heaptrace_common::StackTrace;
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{Instant, MissedTickBehavior, interval, sleep_until},
};

use self::lifecycle::{Action, Admission, Lifecycle, TraceOutcome, TraceRequest};
use crate::{
    cli::Config,
    clock,
    core::{
        Event, EventKind, Input, Model, ModelConfig, Record, Sample,
        container::parse_cgroup_path,
        input::Origin,
        record::{SCHEMA_VERSION, Started},
    },
    host::{
        self, ProcessError,
        names::{self, ContainerNames},
    },
    kernel::Tracer,
    output::{CollectorStats, Sink, dump},
    recording::{StepRef, writer::RecordingWriter},
    symbols::StackNamer,
    v8::V8Support,
};

/// How often a selection re-scans /proc, for processes that joined it
/// without an exec or fork (moved into a selected cgroup, renamed) or whose
/// exec event was lost.
const RESCAN_EVERY: Duration = Duration::from_secs(10);

/// How often processes are sampled when the snapshot interval is longer:
/// the verdicts and the flight recorder are at one-second resolution.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Why tracing stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    Deadline,
    Signal,
    AllExited,
    /// The output's reader went away.
    OutputClosed,
    /// The output asked to stop (`q` in the live view).
    Quit,
}

/// Traces what `config` selects until a stop condition, writing records to
/// `sink`. Must run inside a tokio runtime.
pub async fn run(config: Config, sink: &mut dyn Sink) -> Result<Stop> {
    let selection = config.selection.clone();
    // Unknown pids are refused before anything is loaded.
    for &pid in &selection.pids {
        host::check_exists(pid)?;
    }
    let tracer =
        Tracer::load(config.mem_hook, config.ring_buffer_bytes, &selection.kernel(), config.stack_min_bytes)?;
    if config.verbose {
        eprintln!("heaptrace: memory hook: {}", tracer.mem_hook());
        for note in tracer.notes() {
            eprintln!("heaptrace: note: {note}");
        }
    }
    let model = Model::new(ModelConfig {
        page_size: clock::page_size(),
        large_threshold: config.large_threshold,
        wall_offset_ns: clock::wall_offset_ns(),
        mem_hook: tracer.mem_hook(),
        group_all: selection.follows(),
    });
    let model_config = model.config().clone();
    let recording = match &config.record {
        Some(record) => Some(
            RecordingWriter::create(
                &record.path,
                record.max_bytes,
                &crate::recording::Header::now(model_config),
            )
            .with_context(|| format!("--record {}", record.path.display()))?,
        ),
        None => None,
    };
    let mut c = Collector {
        tracer,
        model,
        sink,
        v8: V8Support::new(selection.follows()),
        lifecycle: Lifecycle::new(selection),
        names: names::default_lookup(),
        verbose: config.verbose,
        dump_dir: config.dump_dir.clone(),
        stacks: StackNamer::default(),
        exports: exports::Exports { flamegraph: config.flamegraph.clone(), pprof: config.pprof.clone() },
        exports_written: true,
        out: Vec::new(),
        on_leak: on_leak::OnLeak::new(config.on_leak),
        recording,
    };
    c.begin()?;
    let looped = c.main_loop(&config).await;
    // Inspections under way close their inspectors before anything ends.
    for (pid, result) in c.on_leak.finish().await {
        c.heap_done(pid, result);
    }
    let stop = match looped.and_then(|stop| c.finish().map(|()| stop)) {
        Ok(stop) => stop,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Stop::OutputClosed,
        Err(e) => return Err(e).context("writing output"),
    };
    if let Some(recording) = c.recording.take() {
        say_recorded(recording.finish());
    }
    if !c.exports_written {
        anyhow::bail!("the flame graph or pprof file could not be written (see above)");
    }
    Ok(stop)
}

struct Collector<'a> {
    tracer: Tracer,
    model: Model,
    sink: &'a mut dyn Sink,
    v8: V8Support,
    lifecycle: Lifecycle,
    names: names::Chain,
    verbose: bool,
    dump_dir: Option<std::path::PathBuf>,
    stacks: StackNamer,
    exports: exports::Exports,
    /// False when an export failed (the exit status says so).
    exports_written: bool,
    /// Records made and not yet written.
    out: Vec<Record>,
    /// `--on-leak`'s inspections.
    on_leak: on_leak::OnLeak,
    /// `--record`: every input, as the model gets it.
    recording: Option<RecordingWriter>,
}

impl Collector<'_> {
    /// Brings in the named processes and, for a selection, the running ones
    /// it picks; then the `start` record.
    fn begin(&mut self) -> Result<()> {
        // Named processes: failing to read one is an error, not a warning.
        self.run_actions(self.lifecycle.start())?;
        let follows = self.lifecycle.selection().follows();
        if follows {
            self.rescan();
            if !self.model.any_live() {
                eprintln!("heaptrace: no matching process is running yet; waiting for one to start");
            }
        } else if !self.model.any_live() {
            anyhow::bail!("none of the given processes is running any more");
        }
        let started = Record::Start(Started {
            ts: clock::wall_now(),
            schema_version: SCHEMA_VERSION,
            selection: self.lifecycle.selection().describe(),
            follows_new_processes: follows,
            processes: self.model.live_pids().len(),
            mem_hook: self.tracer.mem_hook(),
        });
        if let (Some(recording), Record::Start(s)) = (&mut self.recording, &started) {
            recording.step(StepRef::Start(s));
        }
        self.sink.record(&started).context("writing output")?;
        self.emit().context("writing output")
    }

    async fn main_loop(&mut self, config: &Config) -> io::Result<Stop> {
        let deadline = config.duration.map(|d| Instant::now() + d);
        let mut snapshot_tick = interval(config.interval);
        snapshot_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The verdicts and the flight recorder want a reading a second,
        // whatever the snapshot interval; with a 1 s interval or shorter
        // the snapshot tick samples, and this one stays idle.
        let separate_samples = config.interval > SAMPLE_EVERY;
        let mut sample_tick = interval(SAMPLE_EVERY);
        sample_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Frequent events are submitted without wakeups (see heaptrace-common),
        // so this bounds how stale the event stream can be.
        let mut drain_tick = interval(config.drain_every);
        drain_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut rescan_tick = interval(RESCAN_EVERY);
        rescan_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        snapshot_tick.tick().await; // the first tick is immediate: skip it
        sample_tick.tick().await;
        rescan_tick.tick().await;
        let follows = self.lifecycle.selection().follows();

        loop {
            tokio::select! {
                _ = sigint.recv() => return Ok(Stop::Signal),
                _ = sigterm.recv() => return Ok(Stop::Signal),
                _ = until(deadline) => return Ok(Stop::Deadline),
                ready = self.tracer.readable() => {
                    ready?;
                    self.drain();
                }
                _ = drain_tick.tick() => self.drain(),
                _ = sample_tick.tick(), if separate_samples => {
                    self.drain();
                    self.sample();
                    self.end_recording_chunk();
                }
                _ = snapshot_tick.tick() => {
                    self.drain();
                    if !separate_samples {
                        self.sample();
                    }
                    let now_ns = clock::monotonic_ns();
                    self.record_step(StepRef::Snapshots { now_ns });
                    self.model.snapshots(now_ns, &mut self.out);
                    self.emit()?;
                    let stats = self.stats();
                    self.record_step(StepRef::Tick(&stats));
                    self.sink.tick(&stats);
                    self.end_recording_chunk();
                }
                _ = rescan_tick.tick(), if follows => self.rescan(),
                (pid, result) = self.on_leak.next() => self.heap_done(pid, result),
            }
            self.emit()?;
            if self.sink.quit_requested() {
                return Ok(Stop::Quit);
            }
            if !follows && !self.model.any_live() {
                return Ok(Stop::AllExited);
            }
        }
    }

    /// Last drain and samples, then the summary; every process leaves the
    /// kernel's traced set and loses its own probes (dropping the tracer
    /// would detach them too; this says so where it happens).
    fn finish(&mut self) -> io::Result<()> {
        self.drain();
        self.sample();
        let now_ns = clock::monotonic_ns();
        self.record_step(StepRef::Summary { now_ns });
        let summary = self.model.summary(now_ns);
        if let Record::Summary(s) = &summary {
            self.exports_written = self.exports.write(s);
        }
        self.out.push(summary);
        self.emit()?;
        if self.verbose && self.tracer.stack_stats().captured > 0 {
            eprintln!("heaptrace: {}", self.stacks.describe(self.tracer.stack_stats()));
        }
        for pid in self.model.live_pids() {
            self.tracer.untrace(pid);
            self.v8.detach(pid, &mut self.tracer);
        }
        self.sink.flush()
    }

    /// Every input reaches the model through here, and the recording first.
    fn feed(&mut self, input: Input) {
        self.record_step(StepRef::Input(&input));
        self.model.apply(input, &mut self.out);
    }

    fn record_step(&mut self, step: StepRef<'_>) {
        if let Some(recording) = &mut self.recording {
            recording.step(step);
        }
    }

    /// A recording is written a chunk per second: a crash loses at most that.
    fn end_recording_chunk(&mut self) {
        if let Some(recording) = &mut self.recording {
            recording.end_chunk();
        }
    }

    /// Every waiting kernel event, through the lifecycle, one at a time (an
    /// event's actions can change what the next one means).
    fn drain(&mut self) {
        let mut events = Vec::new();
        self.tracer.drain(&mut events);
        self.name_new_stacks(&events);
        let mut actions = Vec::new();
        for event in events {
            if let EventKind::Mem { stack: Some(id), .. } = event.kind {
                self.name_stack(event.pid, id);
            }
            let model = &self.model;
            self.lifecycle.on_event(event, &|pid| model.is_live(pid), &mut actions);
            self.run_actions_at_runtime(actions.drain(..));
        }
    }

    /// Names the new stacks of a drained batch, per process in one pass
    /// (see `StackNamer::name_many`), before their events reach the model.
    /// A process that joins within the batch has its stacks named one by
    /// one as its events come ([`Self::name_stack`]).
    fn name_new_stacks(&mut self, events: &[Event]) {
        let mut new: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
        for event in events {
            if let EventKind::Mem { stack: Some(id), .. } = event.kind
                && !self.stacks.is_known(event.pid, id)
                && self.model.is_live(event.pid)
            {
                new.entry(event.pid).or_default().insert(id);
            }
        }
        for (pid, ids) in new {
            let traces: Vec<(u64, Option<StackTrace>)> =
                ids.iter().map(|&id| (id, self.tracer.stack(id))).collect();
            let named = self.stacks.name_many(pid, &traces, &mut self.v8);
            for (id, frames) in ids.into_iter().zip(named) {
                self.feed(Input::Stack { pid, id, frames });
            }
        }
    }

    /// Names a stack the first time a process's event carries it, before
    /// that event reaches the model.
    fn name_stack(&mut self, pid: u32, id: u64) {
        if self.stacks.is_known(pid, id) || !self.model.is_live(pid) {
            return;
        }
        let trace = self.tracer.stack(id);
        let frames = self.stacks.name(pid, id, trace.as_ref(), &mut self.v8);
        self.feed(Input::Stack { pid, id, frames });
    }

    /// Processes the selection picks that are not traced yet.
    fn rescan(&mut self) {
        let candidates = host::select::scan(self.lifecycle.selection());
        let model = &self.model;
        let actions = self.lifecycle.rescan(&candidates, &|pid| model.is_live(pid));
        self.run_actions_at_runtime(actions);
    }

    /// Reads /proc and the kernel counters for every live process, the
    /// cgroups' memory figures, and the drop counters.
    fn sample(&mut self) {
        let mut group_member: BTreeMap<String, u32> = BTreeMap::new();
        for (pid, group) in self.model.live_pids_and_groups() {
            let status = host::read_status(pid);
            if status.is_some() && !group.is_empty() {
                group_member.entry(group).or_insert(pid);
            }
            let sample = Sample {
                pid,
                ts_ns: clock::monotonic_ns(),
                status,
                calls: self.tracer.calls(pid).unwrap_or_default(),
                gc_work: self.tracer.gc_work(pid),
            };
            let actions = self.lifecycle.sampled(sample);
            self.run_actions_at_runtime(actions);
        }
        for (path, pid) in group_member {
            if let Some(sample) = host::cgroup::memory(&path, pid, clock::monotonic_ns()) {
                self.feed(Input::Cgroup(sample));
            }
        }
        let (kernel, undecodable) = self.tracer.drops();
        self.feed(Input::Drops { ts_ns: clock::monotonic_ns(), kernel, undecodable });
    }

    /// After start, no action can fail: only named processes can, and they
    /// are brought in by [`Self::begin`].
    fn run_actions_at_runtime(&mut self, actions: impl IntoIterator<Item = Action>) {
        if let Err(e) = self.run_actions(actions) {
            eprintln!("heaptrace: {e}");
        }
    }

    /// Carries out actions in order; an action's follow-ups run before the
    /// next one.
    fn run_actions(&mut self, actions: impl IntoIterator<Item = Action>) -> Result<(), ProcessError> {
        for action in actions {
            let follow_ups = match action {
                Action::Apply(input) => {
                    self.feed(input);
                    continue;
                }
                Action::Trace(request) => {
                    let outcome = self.trace(&request);
                    self.lifecycle.traced(request, outcome)?
                }
                Action::ReadCgroup { pid, seen } => {
                    let path = host::select::cgroup_path_of(pid);
                    self.lifecycle.cgroup_read(pid, seen, path.as_deref())
                }
                Action::SetCgroupVerdict { cgroup_id, selected } => {
                    // A failed write only means the kernel asks again.
                    let _ = self.tracer.set_cgroup_verdict(cgroup_id, selected);
                    continue;
                }
                Action::Untrace(pid) => {
                    self.stacks.forget(pid);
                    self.tracer.untrace(pid);
                    self.v8.detach(pid, &mut self.tracer);
                    continue;
                }
                Action::DetachV8(pid) => {
                    self.stacks.forget(pid);
                    self.v8.detach(pid, &mut self.tracer);
                    continue;
                }
                Action::ReadHeapLimit { pid, heap } => {
                    match self.v8.heap_size_limit(pid, heap) {
                        Ok(limits) => {
                            let input = Input::HeapLimit {
                                pid,
                                ts_ns: clock::monotonic_ns(),
                                bytes: limits.heap_size_limit,
                                old_generation_bytes: limits.old_generation,
                            };
                            self.feed(input);
                        }
                        Err(e) if self.verbose => {
                            eprintln!("heaptrace: pid {pid}: V8's heap limit not read: {e}")
                        }
                        Err(_) => {}
                    }
                    continue;
                }
                Action::RetryV8(pid) => {
                    let probed = self.attach_v8(pid, "", false);
                    self.lifecycle.v8_retried(pid, probed, clock::monotonic_ns())
                }
                Action::Say { text, verbose } => {
                    if self.verbose || !verbose {
                        eprintln!("heaptrace: {text}");
                    }
                    continue;
                }
            };
            self.run_actions(follow_ups)?;
        }
        Ok(())
    }

    /// Brings one process in (see [`TraceRequest`]): into the kernel's
    /// traced set first, then its baseline is read, so that events racing
    /// the read are applied on top of it, which is idempotent. A just-exec'd
    /// process of a binary not seen before is held still while its V8
    /// probes go in (see `v8::hold`).
    fn trace(&mut self, request: &TraceRequest) -> TraceOutcome {
        let pid = request.pid;
        let follow = match request.admission {
            Admission::ByKernel => None,
            Admission::Named => Some(false),
            Admission::Selected => Some(true),
        };
        if let Some(follow) = follow
            && let Err(e) = self.tracer.trace(pid, follow)
        {
            return TraceOutcome::KernelRefused(e.to_string());
        }
        let held = (request.origin == Origin::Exec).then(|| self.v8.hold_if_new(pid)).flatten();
        if let Some(Err(why)) = &held
            && self.verbose
        {
            eprintln!("heaptrace: pid {pid}: not held while its GC probes are attached ({why})");
        }
        let mut info = match host::process_info(pid, clock::monotonic_ns()) {
            Ok(info) => info,
            Err(ProcessError::NoSuchProcess(_)) => {
                return TraceOutcome::Gone { ts_ns: clock::monotonic_ns() };
            }
            Err(e) => return TraceOutcome::Unreadable(e),
        };
        info.origin = request.origin;
        info.container = info.cgroup_path.as_deref().and_then(parse_cgroup_path).map(|mut c| {
            self.names.name(&mut c);
            c
        });
        info.gc_probes = self.attach_v8(pid, &info.comm, request.admission == Admission::Named);
        if let Some(Ok(h)) = &held
            && self.verbose
        {
            eprintln!("heaptrace: pid {pid}: held {:.0} ms while its GC probes were attached", h.held_ms());
        }
        // Dropping the hold lets the process go.
        drop(held);
        TraceOutcome::Read(Box::new(info))
    }

    /// Attaches V8's probes to a process, saying what happened; memory
    /// tracing goes on whatever the outcome. True if probes cover it.
    fn attach_v8(&mut self, pid: u32, comm: &str, named: bool) -> bool {
        let outcome = self.v8.attach(pid, &mut self.tracer);
        for message in outcome.messages(pid, comm, named, self.verbose, self.v8.per_binary()) {
            eprintln!("heaptrace: {message}");
        }
        outcome.probed()
    }

    fn stats(&self) -> CollectorStats {
        let (kernel, undecodable) = self.tracer.drops();
        CollectorStats {
            now_ns: clock::monotonic_ns(),
            events: self.tracer.decoded(),
            dropped: kernel + undecodable,
            probe_attach_failures: self.v8.attach_failures(),
            model: self.model.size(),
        }
    }

    /// Writes the records made so far; a death's flight recording goes to
    /// its dump file first, so its record can say where.
    /// An `--on-leak` inspection's end: its report into the model, or why
    /// there is none.
    fn heap_done(&mut self, pid: u32, result: Result<crate::heap::HeapReport, String>) {
        match result {
            Ok(report) => self.feed(Input::Heap(Box::new(report))),
            Err(e) => eprintln!("heaptrace: pid {pid}: --on-leak: {e}"),
        }
    }

    fn emit(&mut self) -> io::Result<()> {
        let mut records = std::mem::take(&mut self.out);
        self.on_leak.watch(&records);
        for record in &mut records {
            if let (Record::Death(death), Some(dir)) = (&mut *record, &self.dump_dir) {
                match dump::write(dir, death) {
                    Ok(path) => death.dump_path = Some(path.display().to_string()),
                    Err(e) => eprintln!(
                        "heaptrace: cannot write the dump of pid {} into {}: {e}",
                        death.pid,
                        dir.display()
                    ),
                }
            }
        }
        records.iter().try_for_each(|r| self.sink.record(r))
    }
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Where the recording went, and how to read it.
fn say_recorded(written: crate::recording::writer::Written) {
    let size = crate::units::fmt_bytes(written.bytes as f64);
    match (&written.error, written.stopped_at_max) {
        (Some(e), _) => eprintln!(
            "heaptrace: the recording {} is incomplete ({size}; writing failed: {e}); it replays up to there",
            written.path.display()
        ),
        (None, true) => eprintln!(
            "heaptrace: the recording {} stopped at --record-max ({size}); `heaptrace report {}` replays up to there",
            written.path.display(),
            written.path.display()
        ),
        (None, false) => eprintln!(
            "heaptrace: recorded {size} to {}; replay it with `heaptrace report {}`",
            written.path.display(),
            written.path.display()
        ),
    }
}
