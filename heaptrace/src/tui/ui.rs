//! What the user chose (sort column, filter, selected row) and what keys
//! do. Pure: keys in, a [`Command`] out, tested without a terminal.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::state::{Row, RowKey, ViewState};

/// The table's columns, in order; the sortable ones are cycled by `s`
/// and chosen by their number key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    Rss,
    Growth,
    Heap,
    Native,
    GcShare,
    PauseP99,
    Verdict,
    TimeToLimit,
    Pid,
}

impl SortKey {
    pub const ALL: [SortKey; 9] = [
        SortKey::Rss,
        SortKey::Growth,
        SortKey::Heap,
        SortKey::Native,
        SortKey::GcShare,
        SortKey::PauseP99,
        SortKey::Verdict,
        SortKey::TimeToLimit,
        SortKey::Pid,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SortKey::Rss => "rss",
            SortKey::Growth => "growth",
            SortKey::Heap => "heap",
            SortKey::Native => "native",
            SortKey::GcShare => "gc%",
            SortKey::PauseP99 => "p99",
            SortKey::Verdict => "verdict",
            SortKey::TimeToLimit => "limit in",
            SortKey::Pid => "pid",
        }
    }

    fn next(self) -> Self {
        let i = Self::ALL.iter().position(|&k| k == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }

    /// The natural order: largest first, except the time to a limit and
    /// the pid (smallest first).
    fn ascending(self) -> bool {
        matches!(self, SortKey::TimeToLimit | SortKey::Pid)
    }
}

/// What a key asks of the loop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Command {
    None,
    /// The view changed: draw it.
    Redraw,
    Quit,
    /// Browsing: move the time cursor by this many seconds.
    Step(f64),
    Home,
    End,
}

#[derive(Clone, Debug)]
pub struct UiState {
    pub sort: SortKey,
    /// Reversed from the key's natural order (`S`).
    pub reversed: bool,
    pub filter: String,
    /// `/` was pressed: keys type into the filter until Enter or Esc.
    pub editing_filter: bool,
    pub selected: Option<RowKey>,
    /// Browsing a recording: arrows move in time.
    pub browsing: bool,
}

impl Default for UiState {
    fn default() -> Self {
        Self {
            sort: SortKey::Rss,
            reversed: false,
            filter: String::new(),
            editing_filter: false,
            selected: None,
            browsing: false,
        }
    }
}

/// Seconds moved by left/right and by `[`/`]` in a recording.
pub const SMALL_STEP_S: f64 = 1.0;
pub const LARGE_STEP_S: f64 = 30.0;

impl UiState {
    /// The rows shown: filtered, sorted, into `out` (kept between frames).
    pub fn visible<'a>(&self, state: &'a ViewState, out: &mut Vec<Row<'a>>) {
        state.rows(out);
        if !self.filter.is_empty() {
            let needle = self.filter.to_lowercase();
            out.retain(|r| {
                r.name.to_lowercase().contains(&needle)
                    || r.pid.is_some_and(|p| p.to_string().contains(&needle))
                    || r.verdict.is_some_and(|v| v.state.name().contains(&needle))
            });
        }
        let key = self.sort;
        let ascending = key.ascending() != self.reversed;
        out.sort_by(|a, b| {
            let o = compare(key, a, b);
            let o = if ascending { o } else { o.reverse() };
            o.then_with(|| a.key.cmp(&b.key))
        });
    }

    /// The selected row's index among `rows`: the chosen one if shown,
    /// else the first.
    pub fn selected_index(&self, rows: &[Row]) -> Option<usize> {
        if rows.is_empty() {
            return None;
        }
        Some(self.selected.and_then(|k| rows.iter().position(|r| r.key == k)).unwrap_or(0))
    }

    pub fn on_key(&mut self, key: KeyEvent, rows: &[Row]) -> Command {
        if key.kind == KeyEventKind::Release {
            return Command::None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('d')) {
            return Command::Quit;
        }
        if self.editing_filter {
            match key.code {
                KeyCode::Enter => self.editing_filter = false,
                KeyCode::Esc => {
                    self.editing_filter = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) if !ctrl => self.filter.push(c),
                _ => return Command::None,
            }
            return Command::Redraw;
        }
        match key.code {
            KeyCode::Char('q') => return Command::Quit,
            KeyCode::Esc if !self.filter.is_empty() => self.filter.clear(),
            KeyCode::Char('/') => self.editing_filter = true,
            KeyCode::Char('s') => {
                self.sort = self.sort.next();
                self.reversed = false;
            }
            KeyCode::Char('S') => self.reversed = !self.reversed,
            KeyCode::Char(c @ '1'..='9') => {
                let chosen = SortKey::ALL[usize::from(c as u8 - b'1')];
                self.reversed = self.sort == chosen && !self.reversed;
                self.sort = chosen;
            }
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(rows, -1),
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(rows, 1),
            KeyCode::PageUp => self.move_selection(rows, -10),
            KeyCode::PageDown => self.move_selection(rows, 10),
            KeyCode::Left if self.browsing => return Command::Step(-SMALL_STEP_S),
            KeyCode::Right if self.browsing => return Command::Step(SMALL_STEP_S),
            KeyCode::Char('[') if self.browsing => return Command::Step(-LARGE_STEP_S),
            KeyCode::Char(']') if self.browsing => return Command::Step(LARGE_STEP_S),
            KeyCode::Home if self.browsing => return Command::Home,
            KeyCode::End if self.browsing => return Command::End,
            _ => return Command::None,
        }
        Command::Redraw
    }

    fn move_selection(&mut self, rows: &[Row], by: isize) {
        let Some(i) = self.selected_index(rows) else { return };
        let j = i.saturating_add_signed(by).min(rows.len() - 1);
        self.selected = Some(rows[j].key);
    }
}

fn compare(key: SortKey, a: &Row, b: &Row) -> std::cmp::Ordering {
    let opt = |x: Option<f64>| x.unwrap_or(f64::NEG_INFINITY);
    match key {
        SortKey::Rss => a.rss.cmp(&b.rss),
        SortKey::Growth => a.growth_per_s.total_cmp(&b.growth_per_s),
        SortKey::Heap => a.heap_after_major.cmp(&b.heap_after_major),
        SortKey::Native => a.native_growth.cmp(&b.native_growth),
        SortKey::GcShare => opt(a.gc_share).total_cmp(&opt(b.gc_share)),
        SortKey::PauseP99 => opt(a.p99_ms).total_cmp(&opt(b.p99_ms)),
        SortKey::Verdict => verdict_rank(a).cmp(&verdict_rank(b)),
        // No forecast sorts last.
        SortKey::TimeToLimit => {
            a.time_to_limit_s.unwrap_or(f64::INFINITY).total_cmp(&b.time_to_limit_s.unwrap_or(f64::INFINITY))
        }
        SortKey::Pid => a.pid.unwrap_or(0).cmp(&b.pid.unwrap_or(0)),
    }
}

/// Worse verdicts rank higher.
fn verdict_rank(r: &Row) -> u8 {
    use crate::core::record::VerdictState::*;
    match r.verdict.map(|v| v.state) {
        None | Some(Unknown) => 0,
        Some(Steady) => 1,
        Some(Growing) => 2,
        Some(Leak) => 3,
        Some(GcThrashing) => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        core::record::Verdict,
        tui::{fixtures::*, state::ViewState},
    };

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn three() -> ViewState {
        let mut s = ViewState::default();
        s.apply(&snapshot(1.0, 10, "api", 300 * MIB, 0, Verdict::unknown("")));
        s.apply(&snapshot(1.0, 20, "worker", 100 * MIB, 0, leak(MIB as f64, 60.0)));
        s.apply(&snapshot(1.0, 30, "cron", 200 * MIB, 0, leak(MIB as f64, 600.0)));
        s
    }

    fn pids(ui: &UiState, s: &ViewState) -> Vec<u32> {
        let mut rows = Vec::new();
        ui.visible(s, &mut rows);
        rows.iter().filter_map(|r| r.pid).collect()
    }

    #[test]
    fn sorting_by_key_and_cycling() {
        let s = three();
        let mut ui = UiState::default();
        assert_eq!(pids(&ui, &s), [10, 30, 20], "by RSS, largest first");
        assert_eq!(ui.on_key(key(KeyCode::Char('8')), &[]), Command::Redraw);
        assert_eq!(pids(&ui, &s), [20, 30, 10], "by time to limit, soonest first, none last");
        ui.on_key(key(KeyCode::Char('8')), &[]);
        assert_eq!(pids(&ui, &s), [10, 30, 20], "the same key again reverses");
        ui.on_key(key(KeyCode::Char('9')), &[]);
        ui.on_key(key(KeyCode::Char('s')), &[]);
        assert_eq!(ui.sort, SortKey::Rss, "s cycles round");
    }

    #[test]
    fn filtering_by_text() {
        let s = three();
        let mut ui = UiState::default();
        for c in ['/', 'w', 'o'] {
            ui.on_key(key(KeyCode::Char(c)), &[]);
        }
        assert!(ui.editing_filter);
        assert_eq!(pids(&ui, &s), [20]);
        assert_eq!(ui.on_key(key(KeyCode::Char('q')), &[]), Command::Redraw, "q types while filtering");
        ui.on_key(key(KeyCode::Backspace), &[]);
        ui.on_key(key(KeyCode::Enter), &[]);
        assert_eq!(pids(&ui, &s), [20]);
        ui.on_key(key(KeyCode::Esc), &[]);
        assert_eq!(pids(&ui, &s).len(), 3);
        ui.on_key(key(KeyCode::Char('/')), &[]);
        ui.on_key(key(KeyCode::Char('l')), &[]);
        ui.on_key(key(KeyCode::Char('e')), &[]);
        assert_eq!(pids(&ui, &s), [30, 20], "a verdict matches too");
    }

    #[test]
    fn selection_follows_the_row_and_keys_quit() {
        let s = three();
        let mut ui = UiState::default();
        let mut rows = Vec::new();
        ui.visible(&s, &mut rows);
        assert_eq!(ui.selected_index(&rows), Some(0));
        ui.on_key(key(KeyCode::Down), &rows);
        ui.on_key(key(KeyCode::Char('j')), &rows);
        ui.on_key(key(KeyCode::Char('j')), &rows);
        assert_eq!(ui.selected, Some(RowKey::Process(20)));
        ui.on_key(key(KeyCode::Char('k')), &rows);
        assert_eq!(ui.selected, Some(RowKey::Process(30)));
        // Re-sorted, the selection stays on its process.
        ui.on_key(key(KeyCode::Char('9')), &rows);
        ui.visible(&s, &mut rows);
        assert_eq!(ui.selected_index(&rows), Some(2));
        assert_eq!(ui.on_key(key(KeyCode::Char('q')), &rows), Command::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(ui.on_key(ctrl_c, &rows), Command::Quit);
    }

    #[test]
    fn arrows_move_in_time_only_when_browsing() {
        let mut ui = UiState::default();
        assert_eq!(ui.on_key(key(KeyCode::Left), &[]), Command::None);
        ui.browsing = true;
        assert_eq!(ui.on_key(key(KeyCode::Left), &[]), Command::Step(-SMALL_STEP_S));
        assert_eq!(ui.on_key(key(KeyCode::Char(']')), &[]), Command::Step(LARGE_STEP_S));
        assert_eq!(ui.on_key(key(KeyCode::Home), &[]), Command::Home);
        assert_eq!(ui.on_key(key(KeyCode::End), &[]), Command::End);
    }
}
