//! The collector: one task that owns the model and `select!`s over the ring
//! buffer, a drain tick, the snapshot interval, the deadline and signals.
//! Edges (kernel, /proc) produce core inputs; records go to the sink.

use std::{collections::HashMap, io, time::Duration};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{Instant, MissedTickBehavior, interval, sleep_until},
};

use crate::{
    cli::Config,
    clock,
    core::{Event, EventKind, Input, Model, ModelConfig, Record, Sample},
    kernel::Tracer,
    output::Sink,
    symbols::{SymbolCache, V8Lookup},
    target,
};

/// How often the ring buffer is drained when the kernel does not wake us.
/// Events are submitted without wakeups (see heaptrace-common), so this
/// bounds how stale the event stream can be.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

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
    // Unknown pids are refused before anything is loaded.
    for &pid in &config.pids {
        target::check_exists(pid)?;
    }
    let mut tracer = Tracer::load(config.mem_hook, config.ring_buffer_bytes)?;
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
    });
    let mut collector = Collector { tracer: &mut tracer, model: &mut model, sink, missing: HashMap::new() };
    let mut symbols = SymbolCache::default();

    for &pid in &config.pids {
        // Into the kernel's traced set first, then read the baseline: events
        // that race the read are applied on top of it, which is idempotent.
        collector.tracer.trace(pid)?;
        match target::process_info(pid, clock::monotonic_ns()) {
            Ok(info) => {
                let comm = info.comm.clone();
                collector.model.apply(Input::Attach(info), &mut Vec::new());
                if attach_gc_probes(collector.tracer, &mut symbols, pid, &comm, config.verbose) {
                    collector.model.set_gc_probed(pid);
                }
            }
            Err(target::TargetError::NoSuchProcess(_)) => {
                // It exited between the check and the attach.
                collector.tracer.untrace(pid);
                eprintln!("heaptrace: pid {pid} exited before tracing started");
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !collector.model.any_live() {
        anyhow::bail!("none of the given processes is running any more");
    }

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

/// Finds V8 in the process and attaches the GC probes. When it cannot, says
/// why on stderr and returns false: memory tracing goes on regardless.
fn attach_gc_probes(
    tracer: &mut Tracer,
    symbols: &mut SymbolCache,
    pid: u32,
    comm: &str,
    verbose: bool,
) -> bool {
    let v8 = match symbols.find_in_process(pid) {
        Ok(V8Lookup::Found(v8)) => v8,
        Ok(V8Lookup::NotFound { looked_at }) => {
            let files: Vec<String> = looked_at
                .iter()
                .map(|(path, id)| format!("{path} (build-id {})", id.as_deref().unwrap_or("none")))
                .collect();
            eprintln!(
                "heaptrace: pid {pid} ({comm}): no V8 garbage-collector symbols in {}: not a Node.js process, \
                 or a stripped binary; tracing memory only",
                files.join(", ")
            );
            return false;
        }
        Err(e) => {
            eprintln!(
                "heaptrace: pid {pid} ({comm}): cannot read its binary for V8 symbols ({e}); tracing memory only"
            );
            return false;
        }
    };
    match tracer.attach_gc(pid, &v8) {
        Ok(report) => {
            if !report.missing.is_empty() {
                eprintln!(
                    "heaptrace: pid {pid} ({comm}): V8 functions not found in {}: {} (their figures will be missing)",
                    v8.display_path,
                    report.missing.join(", ")
                );
            }
            if verbose {
                eprintln!(
                    "heaptrace: pid {pid}: GC probes on {} (build-id {}, {}): {}",
                    v8.display_path,
                    v8.symbols.build_id.as_deref().unwrap_or("none"),
                    if report.v8_timestamps { "V8's own pause timestamps" } else { "kernel timestamps" },
                    report.attached.join(", ")
                );
            }
            true
        }
        Err(e) => {
            eprintln!(
                "heaptrace: pid {pid} ({comm}): GC probes could not be attached ({e:#}); tracing memory only"
            );
            false
        }
    }
}

struct Collector<'a> {
    tracer: &'a mut Tracer,
    model: &'a mut Model,
    sink: &'a mut dyn Sink,
    /// Intervals each pid has been missing from /proc.
    missing: HashMap<u32, u32>,
}

impl Collector<'_> {
    async fn main_loop(&mut self, config: &Config) -> io::Result<Stop> {
        let deadline = config.duration.map(|d| Instant::now() + d);
        let mut snapshot_tick = interval(config.interval);
        snapshot_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut drain_tick = interval(DRAIN_EVERY);
        drain_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        snapshot_tick.tick().await; // the first tick is immediate: skip it

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
                }
            }
            if !self.model.any_live() {
                return Ok(Stop::AllExited);
            }
        }
    }

    /// Applies every waiting kernel event. Exited processes leave the
    /// kernel's traced set once their exit has been recorded.
    fn drain(&mut self) -> io::Result<()> {
        let mut events = Vec::new();
        self.tracer.drain(&mut events);
        let mut out = Vec::new();
        for event in events {
            let exited = matches!(event.kind, EventKind::Exit).then_some(event.pid);
            self.model.apply(Input::Event(event), &mut out);
            if let Some(pid) = exited {
                // The counters are final now: take them before they go.
                let calls = self.tracer.calls(pid).unwrap_or_default();
                let ts_ns = clock::monotonic_ns();
                let gc_work = self.tracer.gc_work(pid);
                self.model
                    .apply(Input::Sample(Sample { pid, ts_ns, status: None, calls, gc_work }), &mut out);
                self.tracer.untrace(pid);
            }
        }
        self.emit(&out)
    }

    /// Reads /proc and the kernel counters for every live process, and the
    /// drop counters.
    fn sample(&mut self) -> io::Result<()> {
        let mut out = Vec::new();
        for pid in self.model.live_pids() {
            let ts_ns = clock::monotonic_ns();
            let status = target::read_status(pid);
            let calls = self.tracer.calls(pid).unwrap_or_default();
            if status.is_none() {
                let missing = self.missing.entry(pid).or_default();
                *missing += 1;
                if *missing >= MISSING_INTERVALS_BEFORE_EXIT {
                    // Gone without an exit event (lost to a full buffer).
                    let exit = Event { pid, tid: pid, ts_ns, cgroup_id: 0, kind: EventKind::Exit };
                    self.model.apply(Input::Event(exit), &mut out);
                    self.tracer.untrace(pid);
                }
            }
            let gc_work = self.tracer.gc_work(pid);
            self.model.apply(Input::Sample(Sample { pid, ts_ns, status, calls, gc_work }), &mut out);
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
