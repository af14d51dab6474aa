use ratatui::{Terminal, backend::TestBackend, crossterm::event::KeyCode};

use super::*;
use crate::{
    core::record::Record,
    tui::{fixtures::*, state::ViewState},
};

fn state_of(records: &[Record]) -> ViewState {
    let mut s = ViewState::default();
    records.iter().for_each(|r| s.apply(r));
    s
}

/// The screen as lines of text.
fn render(state: &ViewState, ui: &UiState, mode: Mode, width: u16, height: u16) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    let mut rows = Vec::new();
    let mut chart = ChartData::default();
    terminal.draw(|f| draw(f, state, ui, mode, &mut rows, &mut chart)).unwrap();
    let buffer = terminal.backend().buffer();
    (0..height).map(|y| (0..width).map(|x| buffer[(x, y)].symbol().to_owned()).collect::<String>()).collect()
}

fn find<'a>(screen: &'a [String], what: &str) -> &'a str {
    screen
        .iter()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("{what:?} not on screen:\n{}", screen.join("\n")))
}

const LIVE: Mode = Mode::Live { message: Some("heaptrace: pid 7: no GC probes"), messages: 2 };

#[test]
fn the_table_shows_each_process_with_its_figures() {
    let s = state_of(&leaking_run(42, 30));
    let screen = render(&s, &UiState::default(), LIVE, 160, 45);
    let header = find(&screen, "PID");
    for column in ["NAME", "RSS▼", "GROWTH/s", "HEAP", "NATIVE", "GC%", "P99", "VERDICT", "LIMIT IN"] {
        assert!(header.contains(column), "{column} missing from {header}");
    }
    let row = find(&screen, "> 42 ");
    assert!(row.contains("node"), "{row}");
    assert!(row.contains("130.0 MiB"), "{row}");
    assert!(row.contains("32.5 MiB"), "heap after the last major GC: {row}");
    assert!(row.contains("0.2%"), "GC share: {row}");
    assert!(row.contains("2.0 ms"), "p99: {row}");
    assert!(row.contains("leak (js-heap)"), "{row}");
    assert!(row.contains("1 h 0 min"), "time to limit: {row}");
}

#[test]
fn the_detail_pane_shows_the_chart_gcs_and_pauses() {
    let s = state_of(&leaking_run(42, 30));
    let screen = render(&s, &UiState::default(), LIVE, 160, 45);
    find(&screen, "pid 42 node");
    find(&screen, "memory (MiB)");
    find(&screen, "rss");
    find(&screen, "major GC");
    // The newest GC first, worded like --trace-gc.
    let gc = find(&screen, "Mark-Compact 58.0 -> 50.0 MB, 2.00 ms allocation");
    assert!(gc.contains("00:17:09"), "{gc}");
    let bucket = find(&screen, "  2-5 ms");
    assert!(bucket.contains("█ 30 "), "{bucket}");
    find(&screen, "GC pauses: 30");
    // Braille dots were drawn.
    assert!(screen.iter().any(|l| l.chars().any(|c| ('\u{2801}'..='\u{28ff}').contains(&c))));
}

#[test]
fn the_status_line_says_what_is_traced_and_the_last_message() {
    let mut s = state_of(&leaking_run(42, 3));
    s.apply_stats(&crate::output::CollectorStats { now_ns: 1_000_000_000, events: 10, ..Default::default() });
    s.apply_stats(&crate::output::CollectorStats {
        now_ns: 2_000_000_000,
        events: 1510,
        dropped: 3,
        ..Default::default()
    });
    let screen = render(&s, &UiState::default(), LIVE, 160, 45);
    let status = &screen[44];
    assert!(status.contains(" live "), "{status}");
    assert!(status.contains("--pid 42 · 1 process at start"), "{status}");
    assert!(status.contains("1500 events/s · 3 dropped"), "{status}");
    assert!(screen[43].contains("[2] heaptrace: pid 7: no GC probes"), "{}", screen[43]);
}

#[test]
fn sites_and_death_show_in_the_detail() {
    let mut records = leaking_run(42, 5);
    records.push(death(1006.0, 42, "node", vec![site("handleRequest", 17, 8 * MIB)]));
    let s = state_of(&records);
    let screen = render(&s, &UiState::default(), LIVE, 160, 45);
    find(&screen, "died (v8-oom, SIGABRT)");
    let site = find(&screen, "handleRequest");
    assert!(site.contains("8.0 MiB live"), "{site}");
    find(&screen, "V8 ran out of heap after its floor rose");
}

#[test]
fn selection_and_sorting_change_what_is_drawn() {
    let mut s = ViewState::default();
    s.apply(&snapshot(1.0, 10, "api", 300 * MIB, 0, Verdict::unknown("")));
    s.apply(&snapshot(1.0, 20, "worker", 100 * MIB, 0, leak(MIB as f64, 60.0)));
    let mut ui = UiState::default();
    let screen = render(&s, &ui, LIVE, 120, 30);
    find(&screen, "pid 10 api");
    let mut rows = Vec::new();
    ui.visible(&s, &mut rows);
    ui.on_key(ratatui::crossterm::event::KeyEvent::from(KeyCode::Down), &rows);
    let screen = render(&s, &ui, LIVE, 120, 30);
    find(&screen, "pid 20 worker");
    ui.on_key(ratatui::crossterm::event::KeyEvent::from(KeyCode::Char('9')), &rows);
    let screen = render(&s, &ui, LIVE, 120, 30);
    find(&screen, "PID▼");
    find(&screen, "sort pid▼");
}

#[test]
fn a_small_terminal_still_draws() {
    let s = state_of(&leaking_run(42, 30));
    for (w, h) in [(40, 10), (20, 5), (1, 1), (200, 60)] {
        let screen = render(&s, &UiState::default(), LIVE, w, h);
        assert_eq!(screen.len(), h as usize);
    }
}

#[test]
fn browsing_shows_the_cursor_time() {
    let s = state_of(&leaking_run(42, 30));
    let ui = UiState { browsing: true, ..Default::default() };
    let screen = render(&s, &ui, Mode::Browse { cursor: 1012.0 }, 160, 45);
    let status = &screen[44];
    assert!(status.contains("replay 00:16:52 (+12 s)"), "{status}");
    assert!(status.contains("←→ 1 s"), "{status}");
}

use crate::core::record::Verdict;
