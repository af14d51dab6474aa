//! A finished list of records browsed in time: the view's state at a
//! cursor is the state built from the records up to it. Moving forward
//! applies the records in between; moving back starts again from the
//! nearest checkpoint (a copy of the state every [`CHECKPOINT_EVERY`]
//! records), so no move replays more than that many records.

use super::state::{ViewState, record_ts};
use crate::core::Record;

pub const CHECKPOINT_EVERY: usize = 4096;

pub struct Timeline {
    records: Vec<Record>,
    /// The latest time among records `..=i` (records are nearly but not
    /// strictly in time order: a GC's time is its start).
    time_upto: Vec<f64>,
    /// (records applied, the state after them), in order; the first is
    /// the empty state.
    checkpoints: Vec<(usize, ViewState)>,
    state: ViewState,
    /// Records applied to `state`.
    applied: usize,
    cursor: f64,
}

impl Timeline {
    pub fn new(records: Vec<Record>) -> Self {
        let mut latest = f64::NEG_INFINITY;
        let time_upto = records
            .iter()
            .map(|r| {
                latest = latest.max(record_ts(r).unwrap_or(latest));
                latest
            })
            .collect();
        let mut t = Self {
            records,
            time_upto,
            checkpoints: vec![(0, ViewState::default())],
            state: ViewState::default(),
            applied: 0,
            cursor: 0.0,
        };
        t.end();
        t
    }

    pub fn state(&self) -> &ViewState {
        &self.state
    }

    pub fn cursor(&self) -> f64 {
        self.cursor
    }

    /// The first and last record times.
    pub fn span(&self) -> (f64, f64) {
        let first = self.time_upto.iter().copied().find(|t| t.is_finite()).unwrap_or(0.0);
        (first, self.time_upto.last().copied().filter(|t| t.is_finite()).unwrap_or(first))
    }

    pub fn home(&mut self) {
        let (first, _) = self.span();
        self.seek(first);
    }

    pub fn end(&mut self) {
        let (_, last) = self.span();
        self.seek(last);
    }

    /// Moves the cursor by `seconds` (negative: back), within the span.
    pub fn step(&mut self, seconds: f64) {
        let (first, last) = self.span();
        self.seek((self.cursor + seconds).clamp(first, last));
    }

    /// The state built from every record up to `ts`.
    pub fn seek(&mut self, ts: f64) {
        self.cursor = ts;
        let upto = self.time_upto.partition_point(|&t| t <= ts);
        self.apply_upto(upto);
    }

    fn apply_upto(&mut self, upto: usize) {
        if upto < self.applied {
            let i = self.checkpoints.partition_point(|(n, _)| *n <= upto) - 1;
            let (n, state) = &self.checkpoints[i];
            self.state = state.clone();
            self.applied = *n;
        }
        while self.applied < upto {
            self.state.apply(&self.records[self.applied]);
            self.applied += 1;
            if self.applied.is_multiple_of(CHECKPOINT_EVERY)
                && self.checkpoints.last().is_some_and(|(n, _)| *n < self.applied)
            {
                self.checkpoints.push((self.applied, self.state.clone()));
            }
        }
    }

    /// Records applied at the cursor.
    pub fn applied(&self) -> usize {
        self.applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::fixtures::*;

    #[test]
    fn the_state_at_a_cursor_is_the_state_of_the_records_up_to_it() {
        let records = leaking_run(42, 20);
        let mut t = Timeline::new(records.clone());
        assert_eq!(t.cursor(), 1020.0);
        assert_eq!(t.state().processes[&42].last.unwrap().rss, 120 * MIB);
        t.seek(1005.2);
        let mut fresh = ViewState::default();
        let upto: Vec<&Record> =
            records.iter().filter(|r| record_ts(r).is_none_or(|ts| ts <= 1005.2)).collect();
        upto.iter().for_each(|r| fresh.apply(r));
        assert_eq!(t.state().processes[&42].points, fresh.processes[&42].points);
        assert_eq!(t.state().processes[&42].last.unwrap().rss, 105 * MIB);
        assert_eq!(t.state().processes[&42].gcs.len(), 5);
        t.step(-100.0);
        assert_eq!(t.cursor(), 1000.0);
        assert!(t.state().processes[&42].points.is_empty());
        t.step(3.0);
        assert_eq!(t.state().processes[&42].last.unwrap().rss, 103 * MIB);
        t.end();
        assert_eq!(t.cursor(), 1020.0);
        t.home();
        assert_eq!(t.applied(), 2, "start and attach");
    }

    #[test]
    fn moving_back_replays_from_a_checkpoint() {
        // Over 3 checkpoints' worth of records.
        let records = leaking_run(42, 7000);
        let n = records.len();
        let mut t = Timeline::new(records);
        assert_eq!(t.applied(), n);
        assert_eq!(t.checkpoints.len(), 1 + n / CHECKPOINT_EVERY);
        t.seek(1000.0 + 6000.0);
        assert_eq!(t.state().processes[&42].last.unwrap().rss, 6100 * MIB);
        t.seek(1000.0 + 10.0);
        assert_eq!(t.state().processes[&42].last.unwrap().rss, 110 * MIB);
        t.seek(1000.0 + 6999.0);
        assert_eq!(t.state().processes[&42].last.unwrap().rss, 7099 * MIB);
    }
}
