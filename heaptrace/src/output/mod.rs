//! Where records go. Every output is a [`Sink`]; none reaches back into the
//! kernel or the core. The live view, recordings and Prometheus plug in here.

mod json;
mod text;

use std::io;

pub use json::JsonSink;
pub use text::TextSink;

use crate::core::Record;

pub trait Sink {
    /// Writes one record. An `io::ErrorKind::BrokenPipe` error means the
    /// reader went away (e.g. `| head`): the caller stops quietly.
    fn record(&mut self, record: &Record) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}
