//! Where records go. Every output is a [`Sink`]; none reaches back into the
//! kernel or the core. The live view, recordings and Prometheus plug in here.
//! The allocation-site exports (flame graph, pprof) are not sinks: they are
//! pure functions from sites to bytes, written once at the end.

pub mod dump;
pub mod flamegraph;
pub mod html;
mod json;
pub mod pprof;
mod sites_export;
mod tee;
mod text;

use std::io;

pub use html::HtmlSink;
pub use json::JsonSink;
pub use sites_export::{ExportError, ProcessSites, write_file};
pub use tee::Tee;
pub use text::{TextSink, write_heap_report};
/// Wordings the live view shares with text output.
pub(crate) use text::{clock, group_label, verdict_label};

use crate::core::Record;

pub trait Sink {
    /// Writes one record. An `io::ErrorKind::BrokenPipe` error means the
    /// reader went away (e.g. `| head`): the caller stops quietly.
    fn record(&mut self, record: &Record) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
    /// The end of an interval's records, with the collector's own figures
    /// (for sinks that keep state, like the metrics of `heaptrace agent`).
    fn tick(&mut self, _stats: &CollectorStats) {}
    /// The sink asks tracing to stop (the live view's `q`); the collector
    /// checks after each turn of its loop.
    fn quit_requested(&self) -> bool {
        false
    }
}

/// A boxed sink is a sink (`--html` tees the text or JSON sink, boxed).
impl<S: Sink + ?Sized> Sink for Box<S> {
    fn record(&mut self, record: &Record) -> io::Result<()> {
        (**self).record(record)
    }

    fn flush(&mut self) -> io::Result<()> {
        (**self).flush()
    }

    fn tick(&mut self, stats: &CollectorStats) {
        (**self).tick(stats);
    }

    fn quit_requested(&self) -> bool {
        (**self).quit_requested()
    }
}

/// A borrowed sink is a sink (the live view, teed with `--html`, is
/// finished by its owner after the run).
impl<S: Sink + ?Sized> Sink for &mut S {
    fn record(&mut self, record: &Record) -> io::Result<()> {
        (**self).record(record)
    }

    fn flush(&mut self) -> io::Result<()> {
        (**self).flush()
    }

    fn tick(&mut self, stats: &CollectorStats) {
        (**self).tick(stats);
    }

    fn quit_requested(&self) -> bool {
        (**self).quit_requested()
    }
}

/// The collector's figures about itself, running totals (kept in a
/// recording, so a replay's sinks see them too).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CollectorStats {
    /// CLOCK_MONOTONIC, ns.
    pub now_ns: u64,
    /// Kernel events decoded from the ring buffer.
    pub events: u64,
    /// Events lost to a full ring buffer, plus undecodable records.
    pub dropped: u64,
    /// Processes whose GC probes could not be attached.
    pub probe_attach_failures: u64,
    /// What the model holds.
    pub model: crate::core::record::ModelSize,
}

/// A sink that writes nothing: `heaptrace report --html` alone, and the
/// fuzzers. It still serialises each record as the JSON sink would, so
/// that what it is handed is checked to be writable.
pub struct Discard;

impl Sink for Discard {
    fn record(&mut self, record: &Record) -> io::Result<()> {
        serde_json::to_writer(io::sink(), record).map_err(io::Error::other)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
