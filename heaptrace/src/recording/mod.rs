//! Recordings: everything the core was fed during a run, in order, so that
//! `heaptrace report FILE` replays it through the same [`Model`] and gets
//! the records the live run printed (replay equals live by construction),
//! on any machine: named stacks, container names and V8's limits travel as
//! inputs, nothing is read from the traced host again.
//!
//! **The format** (version [`FORMAT_VERSION`]):
//!
//! ```text
//! "heaptrace recording\n"        20 bytes of magic
//! version                        u32, little endian
//! chunk*                         [len: u32 LE][crc32 of payload: u32 LE][payload: len bytes]
//! ```
//!
//! Every payload is zlib-compressed JSON Lines. The first chunk holds the
//! [`Header`]; each later one a run of [`Step`]s (about a second's worth).
//! A chunk is written whole or not at all, so a recording cut short (a
//! crash, SIGKILL, a full disk) reads up to its last complete chunk; a
//! complete one ends with [`Step::Summary`]. JSON inside keeps the format
//! readable with `zlib-flate -uncompress` and lets fields be added with
//! `#[serde(default)]` without a version bump; a change old readers would
//! misread bumps [`FORMAT_VERSION`], and they refuse it by name.
//!
//! [`writer`] runs beside the collector (the file is written on a thread of
//! its own, so a slow disk never stalls tracing); [`reader`] is bounded
//! against hostile input (fuzzed: `fuzz/`); [`replay`] drives the model.
//!
//! [`Model`]: crate::core::Model

pub mod reader;
pub mod replay;
pub mod report;
pub mod writer;

use serde::{Deserialize, Serialize};

use crate::{
    core::{Input, ModelConfig, record::Started},
    output::CollectorStats,
};

/// The first bytes of every recording.
pub const MAGIC: &[u8; 20] = b"heaptrace recording\n";

/// The version this heaptrace writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// What a recording says about itself, in its first chunk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// The heaptrace that wrote it.
    pub heaptrace_version: String,
    /// The traced host's name (for the reader's orientation only).
    pub host: String,
    /// When recording started, Unix seconds.
    pub created: f64,
    /// How the model was set up: the replay sets its own up the same way.
    pub model: ModelConfig,
}

impl Header {
    /// This heaptrace, this host, now.
    pub fn now(model: ModelConfig) -> Self {
        Self {
            heaptrace_version: env!("CARGO_PKG_VERSION").to_owned(),
            host: crate::host::host_name(),
            created: crate::clock::wall_now(),
            model,
        }
    }
}

/// One thing the core was fed, in the order it happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// The `start` record, as the collector made it.
    Start(Started),
    /// An input applied to the model.
    Input(Input),
    /// The interval's snapshot records were made at this time.
    Snapshots { now_ns: u64 },
    /// The collector's own figures at the end of an interval.
    Tick(CollectorStats),
    /// The summary was made at this time: the last step of a complete
    /// recording.
    Summary { now_ns: u64 },
}

/// [`Step`] by reference, for writing without a copy; serialises exactly
/// as `Step` does (a unit test holds them together).
#[derive(Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub(crate) enum StepRef<'a> {
    Start(&'a Started),
    Input(&'a Input),
    Snapshots { now_ns: u64 },
    Tick(&'a CollectorStats),
    Summary { now_ns: u64 },
}

/// Why a file cannot be replayed at all. (A recording cut short is not an
/// error: see [`reader::Cut`].)
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// The file could not be opened or read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Zero bytes.
    #[error("the file is empty: not a heaptrace recording")]
    Empty,
    /// The first bytes are not [`MAGIC`].
    #[error("not a heaptrace recording (it does not start with heaptrace's magic bytes)")]
    NotARecording,
    /// Written by a newer heaptrace.
    #[error(
        "recording format version {found} is newer than this heaptrace reads (up to {FORMAT_VERSION}): \
         replay it with the heaptrace that made it, or a newer one"
    )]
    FutureVersion { found: u32 },
    /// The magic is there but the header chunk is missing or damaged.
    #[error("the recording's header is unreadable: {0}")]
    BadHeader(String),
}

#[cfg(test)]
mod tests;
