//! Two sinks as one: `--html` next to the text or JSON output.

use std::io;

use super::{CollectorStats, Sink};
use crate::core::Record;

/// Gives every record, tick and flush to both sinks, first to `first`.
pub struct Tee<A, B> {
    first: A,
    second: B,
}

impl<A: Sink, B: Sink> Tee<A, B> {
    pub fn new(first: A, second: B) -> Self {
        Self { first, second }
    }
}

impl<A: Sink, B: Sink> Sink for Tee<A, B> {
    /// An error of the first (a broken pipe on stdout) still lets the second
    /// see the record: the HTML report must not lose the records the reader
    /// of stdout no longer wants. The first error is returned.
    fn record(&mut self, record: &Record) -> io::Result<()> {
        let first = self.first.record(record);
        let second = self.second.record(record);
        first.and(second)
    }

    /// Both are flushed even when the first fails.
    fn flush(&mut self) -> io::Result<()> {
        let first = self.first.flush();
        let second = self.second.flush();
        first.and(second)
    }

    fn tick(&mut self, stats: &CollectorStats) {
        self.first.tick(stats);
        self.second.tick(stats);
    }

    /// The live view's `q` stops tracing whatever it is teed with.
    fn quit_requested(&self) -> bool {
        self.first.quit_requested() || self.second.quit_requested()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::{DropReason, Dropped};

    #[derive(Default)]
    struct Counting {
        records: usize,
        ticks: usize,
        flushes: usize,
        fail: bool,
    }

    impl Sink for &mut Counting {
        fn record(&mut self, _: &Record) -> io::Result<()> {
            self.records += 1;
            if self.fail { Err(io::ErrorKind::BrokenPipe.into()) } else { Ok(()) }
        }
        fn flush(&mut self) -> io::Result<()> {
            self.flushes += 1;
            if self.fail { Err(io::ErrorKind::BrokenPipe.into()) } else { Ok(()) }
        }
        fn tick(&mut self, _: &CollectorStats) {
            self.ticks += 1;
        }
    }

    #[test]
    fn both_sinks_see_everything_even_when_the_first_fails() {
        let (mut a, mut b) = (Counting { fail: true, ..Default::default() }, Counting::default());
        let mut tee = Tee::new(&mut a, &mut b);
        let r = Record::Dropped(Dropped { ts: 0.0, count: 1, total: 1, reason: DropReason::Undecodable });
        assert_eq!(tee.record(&r).unwrap_err().kind(), io::ErrorKind::BrokenPipe);
        tee.tick(&CollectorStats::default());
        assert!(tee.flush().is_err());
        assert_eq!((a.records, a.ticks, a.flushes), (1, 1, 1));
        assert_eq!((b.records, b.ticks, b.flushes), (1, 1, 1));
    }
}
