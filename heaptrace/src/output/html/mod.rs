//! `--html FILE`: one self-contained HTML report, written at the end. Per
//! process (and per group where there are groups): the verdict and its
//! evidence, the memory timeline with every GC and the floor's fitted
//! line, GC pauses over time and their histogram, the top allocation
//! sites and their flame graph, and each death's last minutes.
//!
//! The sink keeps only what the page needs, bounded ([`state`]), and
//! depends on the records alone, so `heaptrace report RECORDING --html`
//! (a recording replayed into the same records) gives the same page.
//! Charts are drawn by our own small SVG code ([`svg`] says why not
//! plotters); nothing in the page is fetched and no script runs.

mod charts;
mod page;
mod state;
mod svg;

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
};

pub use page::render;
pub use state::ReportState;

use super::Sink;
use crate::core::Record;

pub struct HtmlSink {
    path: PathBuf,
    state: ReportState,
}

impl HtmlSink {
    /// A report to be written to `path` at [`Sink::flush`].
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), state: ReportState::default() }
    }

    /// What has been kept so far.
    pub fn state(&self) -> &ReportState {
        &self.state
    }
}

impl Sink for HtmlSink {
    fn record(&mut self, record: &Record) -> io::Result<()> {
        let s = &mut self.state;
        match record {
            Record::Start(start) => {
                s.last_ts = s.last_ts.max(start.ts);
                s.start = Some(start.clone());
            }
            Record::Snapshot(snap) => s.snapshot(snap),
            Record::Gc(gc) => s.gc(gc),
            Record::Group(g) => s.group(g),
            Record::Verdict(v) => s.verdict(v),
            Record::Death(d) => s.death(d),
            Record::Exit(e) => {
                let how = if e.oom_killed { "exited, OOM-killed" } else { "exited" };
                // A death said more already.
                if s.processes.get(&e.pid).is_some_and(|p| p.ended.is_none()) {
                    s.ended(e.pid, e.ts, format!("{how} at {}", super::text::clock(e.ts)));
                }
            }
            Record::Dropped(d) => s.dropped_events = s.dropped_events.max(d.total),
            Record::Summary(summary) => s.summary(summary),
            Record::Attach(_)
            | Record::Mapping(_)
            | Record::Mappings(_)
            | Record::Oom(_)
            | Record::Heap(_) => {}
        }
        Ok(())
    }

    /// Writes the page (each flush writes it anew from what was kept).
    fn flush(&mut self) -> io::Result<()> {
        write_atomically(&self.path, render(&self.state).as_bytes()).map_err(|e| {
            io::Error::new(e.kind(), format!("writing the HTML report {}: {e}", self.path.display()))
        })
    }
}

/// Writes `bytes` beside `path` and renames it into place, so a reader
/// (or a crash) never sees half a report. Mode 0644 (less the umask): the
/// report holds memory figures and function names, nothing secret.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name =
        path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests;
