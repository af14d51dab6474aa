//! [`TuiSink`]: the collector's records and figures, forwarded to the view's
//! thread; `q` there comes back as [`Sink::quit_requested`]. The view
//! starts with the first record, so errors before tracing starts (a pid
//! that does not exist, a kernel that refuses) print as usual.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{Sender, channel},
    },
    thread::JoinHandle,
};

use super::terminal::{Msg, run_live};
use crate::{
    core::Record,
    output::{CollectorStats, Sink, TextSink},
};

pub struct TuiSink {
    view: Option<(Sender<Msg>, JoinHandle<io::Result<()>>)>,
    quit: Arc<AtomicBool>,
    /// Records printed on the normal screen once the view closes: the
    /// summary, deaths and `--on-leak` heap reports.
    after: Vec<Record>,
    finished: bool,
}

impl Default for TuiSink {
    fn default() -> Self {
        Self::new()
    }
}

impl TuiSink {
    pub fn new() -> Self {
        Self { view: None, quit: Arc::new(AtomicBool::new(false)), after: Vec::new(), finished: false }
    }

    fn start(&mut self) -> io::Result<()> {
        let (tx, rx) = channel();
        let quit = Arc::clone(&self.quit);
        let thread =
            std::thread::Builder::new().name("heaptrace-tui".into()).spawn(move || run_live(rx, quit))?;
        self.view = Some((tx, thread));
        Ok(())
    }

    /// Closes the view (the terminal and stderr restored, captured
    /// messages printed again), then prints the summary as text output
    /// does. Called once tracing has ended; dropping the sink does it too.
    pub fn finish(&mut self) -> io::Result<()> {
        if std::mem::replace(&mut self.finished, true) {
            return Ok(());
        }
        let mut result = Ok(());
        if let Some((tx, thread)) = self.view.take() {
            let _ = tx.send(Msg::Close);
            result = match thread.join() {
                Ok(r) => r,
                Err(_) => Err(io::Error::other("the live view panicked (see above)")),
            };
        }
        let mut text = TextSink::new(io::stdout().lock(), false);
        for record in self.after.drain(..) {
            text.record(&record)?;
        }
        text.flush()?;
        result
    }
}

impl Sink for TuiSink {
    fn record(&mut self, record: &Record) -> io::Result<()> {
        if self.view.is_none() && !self.finished {
            self.start()?;
        }
        if matches!(record, Record::Summary(_) | Record::Death(_) | Record::Heap(_)) {
            self.after.push(record.clone());
        }
        if let Some((tx, _)) = &self.view {
            // A view that is gone has asked to quit (or failed): the
            // collector sees it through `quit_requested`.
            let _ = tx.send(Msg::Record(Box::new(record.clone())));
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn tick(&mut self, stats: &CollectorStats) {
        if let Some((tx, _)) = &self.view {
            let _ = tx.send(Msg::Stats(*stats));
        }
    }

    fn quit_requested(&self) -> bool {
        self.quit.load(Ordering::Relaxed) || self.view.as_ref().is_some_and(|(_, t)| t.is_finished())
    }
}

impl Drop for TuiSink {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}
