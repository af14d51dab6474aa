//! Drawing: a [`ViewState`] and the user's choices into a frame. No I/O;
//! the chart's points go into buffers kept between frames.
//!
//! ```text
//! ┌ processes and groups (sorted, filtered) ─────────────────────────────┐
//! ├ pid 42 node: leak (js-heap) … ───────────────────────────────────────┤
//! │ memory over time (chart)             │ recent GCs (--trace-gc lines) │
//! │ pause histogram │ top allocation sites │ largest mappings            │
//! └──────────────────────────────────────────────────────────────────────┘
//!  the last stderr message
//!  status: what is traced, events/s, drops, sort, keys (or the time cursor)
//! ```

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    symbols::Marker,
    text::{Line, Span},
    widgets::{
        Axis, Block, Borders, Cell, Chart, Dataset, GraphType, Paragraph, Row as TableRow, Table, TableState,
    },
};

use super::{
    state::{ProcessView, Row, RowKey, ViewState},
    ui::{SortKey, UiState},
};
use crate::{
    output::{clock, verdict_label},
    units::{fmt_bytes, fmt_delta, fmt_duration},
};

/// Live or browsing a recording, and what the status line says of it.
#[derive(Clone, Copy, Debug)]
pub enum Mode<'a> {
    Live {
        /// The last line the collector wrote to stderr, and how many.
        message: Option<&'a str>,
        messages: usize,
    },
    Browse {
        cursor: f64,
    },
}

const MIB_F: f64 = 1048576.0;

/// The chart's points, reused between frames by the terminal loop.
#[derive(Default)]
pub struct ChartData {
    rss: Vec<(f64, f64)>,
    committed: Vec<(f64, f64)>,
    heap: Vec<(f64, f64)>,
    majors: Vec<(f64, f64)>,
}

/// An emptied row buffer, free to borrow from another state: its
/// allocation is kept (a `Vec` collected from its own `into_iter` reuses
/// it), so frames do not allocate rows anew.
pub fn recycle<'b>(mut rows: Vec<Row<'_>>) -> Vec<Row<'b>> {
    rows.clear();
    rows.into_iter().map(|_| unreachable!("the buffer is empty")).collect()
}

/// Draws the whole screen. `rows` and `chart` are buffers the caller
/// keeps between frames.
pub fn draw<'a>(
    frame: &mut Frame,
    state: &'a ViewState,
    ui: &UiState,
    mode: Mode,
    rows: &mut Vec<Row<'a>>,
    chart: &mut ChartData,
) {
    ui.visible(state, rows);
    let area = frame.area();
    let table_height = (rows.len() as u16 + 3).clamp(4, (area.height * 2 / 5).max(4));
    let [table_area, detail_area, message_area, status_area] = Layout::vertical([
        Constraint::Length(table_height),
        Constraint::Min(0),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let selected = ui.selected_index(rows);
    draw_table(frame, table_area, ui, rows, selected);
    match selected.map(|i| rows[i].key) {
        Some(RowKey::Process(pid)) => {
            if let Some(p) = state.processes.get(&pid) {
                draw_process(frame, detail_area, state, p, chart);
            }
        }
        Some(RowKey::Group(id)) => {
            if let Some(g) = state.group_by_id(id) {
                let text = vec![
                    Line::from(format!(
                        "{}: {} processes, rss {}, {} GCs",
                        g.label,
                        g.processes,
                        fmt_bytes(g.last.map_or(0, |l| l.rss) as f64),
                        g.gc_count
                    )),
                    Line::from(g.verdict.as_ref().map_or(String::new(), |v| v.evidence.clone())),
                ];
                frame.render_widget(
                    Paragraph::new(text).block(Block::default().borders(Borders::ALL).title(" group ")),
                    detail_area,
                );
            }
        }
        None => {
            let waiting = if state.started.is_some() { "no process matches" } else { "starting…" };
            frame.render_widget(Paragraph::new(waiting), detail_area);
        }
    }
    draw_status(frame, message_area, status_area, state, ui, mode);
}

fn draw_table(frame: &mut Frame, area: Rect, ui: &UiState, rows: &[Row], selected: Option<usize>) {
    let header_names =
        ["PID", "NAME", "RSS", "GROWTH/s", "HEAP", "NATIVE", "GC%", "P99", "VERDICT", "LIMIT IN"];
    // Header cells, with the sort column marked; column n sorts with key n.
    let sort_column = |k: SortKey| match k {
        SortKey::Pid => 0,
        SortKey::Rss => 2,
        SortKey::Growth => 3,
        SortKey::Heap => 4,
        SortKey::Native => 5,
        SortKey::GcShare => 6,
        SortKey::PauseP99 => 7,
        SortKey::Verdict => 8,
        SortKey::TimeToLimit => 9,
    };
    let marked = sort_column(ui.sort);
    let header = TableRow::new(header_names.iter().enumerate().map(|(i, h)| {
        if i == marked {
            Cell::from(format!("{h}{}", if ui.reversed { "▲" } else { "▼" }))
                .style(Style::default().add_modifier(Modifier::UNDERLINED))
        } else {
            Cell::from(*h)
        }
    }))
    .style(Style::default().add_modifier(Modifier::BOLD));
    let body = rows.iter().map(|r| {
        let verdict = r.verdict.map_or_else(|| "-".to_owned(), verdict_label);
        let style = match r.verdict.map(|v| v.state) {
            _ if r.ended => Style::default().fg(Color::DarkGray),
            Some(
                crate::core::record::VerdictState::Leak | crate::core::record::VerdictState::GcThrashing,
            ) => Style::default().fg(Color::Red),
            Some(crate::core::record::VerdictState::Growing) => Style::default().fg(Color::Yellow),
            _ => Style::default(),
        };
        let name = if r.pid.is_none() { format!("▸ {}", r.name) } else { r.name.to_owned() };
        TableRow::new([
            r.pid.map_or_else(String::new, |p| p.to_string()),
            name,
            fmt_bytes(r.rss as f64),
            format!("{}/s", fmt_delta(r.growth_per_s as i64)),
            r.heap_after_major.map_or_else(|| "-".into(), |h| fmt_bytes(h as f64)),
            r.native_growth.map_or_else(|| "-".into(), fmt_delta),
            r.gc_share.map_or_else(|| "-".into(), |s| format!("{:.1}%", s * 100.0)),
            r.p99_ms.map_or_else(|| "-".into(), |p| format!("{p:.1} ms")),
            if r.ended { format!("{verdict} (ended)") } else { verdict },
            r.time_to_limit_s.map_or_else(|| "-".into(), fmt_duration),
        ])
        .style(style)
    });
    let widths = [
        Constraint::Length(8),
        Constraint::Min(12),
        Constraint::Length(10),
        Constraint::Length(12),
        Constraint::Length(10),
        Constraint::Length(11),
        Constraint::Length(6),
        Constraint::Length(9),
        Constraint::Length(20),
        Constraint::Length(9),
    ];
    let title = format!(" processes and groups: {} ", rows.len());
    let table = Table::new(body, widths)
        .header(header)
        .block(Block::default().borders(Borders::ALL).title(title))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ");
    let mut table_state = TableState::default().with_selected(selected);
    frame.render_stateful_widget(table, area, &mut table_state);
}

fn draw_process(frame: &mut Frame, area: Rect, state: &ViewState, p: &ProcessView, chart: &mut ChartData) {
    let title = format!(
        " pid {} {}{} ",
        p.pid,
        p.comm,
        p.ended.as_ref().map_or(String::new(), |(ts, how)| format!(": {how} at {}", clock(*ts)))
    );
    let block = Block::default().borders(Borders::ALL).title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [words, top, bottom] =
        Layout::vertical([Constraint::Length(1), Constraint::Percentage(60), Constraint::Min(0)])
            .areas(inner);
    let verdict = p.verdict.as_ref();
    let mut line = verdict.map_or_else(String::new, |v| format!("{}: {}", verdict_label(v), v.evidence));
    if let Some(site) = verdict.and_then(|v| v.site.as_ref()) {
        line.push_str(&format!(" (top site {}: {:.0}%)", site.frame.label(), site.share * 100.0));
    }
    if let Some(answer) = &p.answer {
        line = answer.clone();
    }
    frame.render_widget(Paragraph::new(line), words);
    let [chart_area, gcs_area] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(top);
    draw_chart(frame, chart_area, state, p, chart);
    draw_gcs(frame, gcs_area, p);
    let [hist_area, sites_area, maps_area] = Layout::horizontal([
        Constraint::Percentage(28),
        Constraint::Percentage(40),
        Constraint::Percentage(32),
    ])
    .areas(bottom);
    draw_histogram(frame, hist_area, p);
    draw_sites(frame, sites_area, p);
    draw_mappings(frame, maps_area, p);
}

fn draw_chart(frame: &mut Frame, area: Rect, state: &ViewState, p: &ProcessView, c: &mut ChartData) {
    let now = p.ended.as_ref().map_or(state.last_ts, |(ts, _)| *ts);
    let x = |ts: f64| ts - now;
    c.rss.clear();
    c.committed.clear();
    c.heap.clear();
    c.majors.clear();
    for pt in &p.points {
        c.rss.push((x(pt.ts), pt.rss as f64 / MIB_F));
        c.committed.push((x(pt.ts), pt.committed as f64 / MIB_F));
    }
    // The JS heap's seesaw: up to its size before each GC, down to after.
    for h in &p.heap {
        c.heap.push((x(h.ts), h.before as f64 / MIB_F));
        c.heap.push((x(h.ts), h.after as f64 / MIB_F));
        if h.major {
            c.majors.push((x(h.ts), h.after as f64 / MIB_F));
        }
    }
    let oldest = p.points.front().map_or(0.0, |f| x(f.ts)).min(p.heap.front().map_or(0.0, |h| x(h.ts)));
    let x_min = oldest.min(-10.0);
    let y_max =
        c.rss.iter().chain(&c.committed).chain(&c.heap).map(|&(_, y)| y).fold(1.0_f64, f64::max) * 1.1;
    let datasets = vec![
        Dataset::default()
            .name("rss")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::default().fg(Color::Cyan))
            .data(&c.rss),
        Dataset::default()
            .name("committed")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::default().fg(Color::Blue))
            .data(&c.committed),
        Dataset::default()
            .name("js heap")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::default().fg(Color::Green))
            .data(&c.heap),
        Dataset::default()
            .name("major GC")
            .marker(Marker::Dot)
            .graph_type(GraphType::Scatter)
            .style(Style::default().fg(Color::Red))
            .data(&c.majors),
    ];
    let chart = Chart::new(datasets)
        .block(Block::default().title(" memory (MiB) over the last minutes "))
        .legend_position(Some(ratatui::widgets::LegendPosition::TopLeft))
        .hidden_legend_constraints((Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)))
        .x_axis(Axis::default().bounds([x_min, 0.0]).labels([format!("{:.0} s", x_min), "now".to_owned()]))
        .y_axis(Axis::default().bounds([0.0, y_max]).labels(["0".to_owned(), format!("{y_max:.0}")]));
    frame.render_widget(chart, area);
}

fn draw_gcs(frame: &mut Frame, area: Rect, p: &ProcessView) {
    let shown = area.height.saturating_sub(1) as usize;
    let lines: Vec<Line> = p
        .gcs
        .iter()
        .rev()
        .take(shown)
        .map(|g| {
            let marking = if g.marking_steps > 0 {
                format!(" (+ {:.1} ms in {} steps)", g.marking_step_ns as f64 / 1e6, g.marking_steps)
            } else {
                String::new()
            };
            Line::from(format!(
                "{} {} {:.1} -> {:.1} MB, {:.2} ms{marking} {}",
                clock(g.ts),
                g.collector,
                g.before as f64 / MIB_F,
                g.after as f64 / MIB_F,
                g.pause_ns as f64 / 1e6,
                g.reason
            ))
        })
        .collect();
    let title = if p.gc_probes || !p.gcs.is_empty() {
        format!(" recent GCs ({} in all) ", p.gc_count.max(p.gcs.len() as u64))
    } else {
        " no GC probes ".to_owned()
    };
    frame.render_widget(Paragraph::new(lines).block(Block::default().title(title)), area);
}

/// Pause buckets, ms.
const BUCKETS: [(f64, f64, &str); 8] = [
    (0.0, 0.5, "<0.5"),
    (0.5, 1.0, "0.5-1"),
    (1.0, 2.0, "1-2"),
    (2.0, 5.0, "2-5"),
    (5.0, 10.0, "5-10"),
    (10.0, 50.0, "10-50"),
    (50.0, 100.0, "50-100"),
    (100.0, f64::INFINITY, ">100"),
];

fn draw_histogram(frame: &mut Frame, area: Rect, p: &ProcessView) {
    let h = &p.pauses;
    let counts = BUCKETS.map(|(lo, hi, _)| {
        let lo_us = (lo * 1e3) as u64;
        let hi_us = if hi.is_finite() { (hi * 1e3) as u64 - 1 } else { u64::MAX };
        if h.is_empty() { 0 } else { h.count_between(lo_us, hi_us.min(h.high())) }
    });
    let most = counts.iter().copied().max().unwrap_or(0).max(1);
    let width = area.width.saturating_sub(16) as u64;
    let lines: Vec<Line> = BUCKETS
        .iter()
        .zip(counts)
        .map(|((_, _, label), n)| {
            let bar = "█".repeat((n * width).div_ceil(most) as usize);
            Line::from(format!("{label:>6} ms {bar} {n}"))
        })
        .collect();
    let title = match p.pause_p99_ms() {
        Some(p99) => format!(" GC pauses: {}, p99 {p99:.1} ms ", h.len()),
        None => " GC pauses ".to_owned(),
    };
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::TOP).title(title)),
        area,
    );
}

fn draw_sites(frame: &mut Frame, area: Rect, p: &ProcessView) {
    let mut lines: Vec<Line> = p
        .sites
        .iter()
        .map(|s| Line::from(format!("{:>10} live  {}", fmt_bytes(s.live_bytes as f64), s.headline)))
        .collect();
    if lines.is_empty()
        && let Some(site) = p.verdict.as_ref().and_then(|v| v.site.as_ref())
    {
        lines.push(Line::from(format!(
            "{:>10} grew  {} ({:.0}% of the growth)",
            fmt_bytes(site.bytes as f64),
            site.frame.label(),
            site.share * 100.0
        )));
    }
    if lines.is_empty() {
        lines.push(Line::from(Span::styled(
            "listed in the summary (or when a growth has a site)",
            Style::default().fg(Color::DarkGray),
        )));
    }
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::TOP).title(" top allocation sites ")),
        area,
    );
}

fn draw_mappings(frame: &mut Frame, area: Rect, p: &ProcessView) {
    let mut lines: Vec<Line> = p
        .mappings
        .iter()
        .map(|m| {
            let committed =
                m.committed.map_or(String::new(), |c| format!(" ({} committed)", fmt_bytes(c as f64)));
            Line::from(format!("{:>10}{committed} {:#x} {}", fmt_bytes(m.len as f64), m.addr, m.what))
        })
        .collect();
    if let Some(m) = &p.last_mappings {
        lines.push(Line::from(format!(
            "last interval: {} mapped ({}), {} unmapped ({})",
            m.mapped,
            fmt_bytes(m.mapped_bytes as f64),
            m.unmapped,
            fmt_bytes(m.unmapped_bytes as f64)
        )));
    }
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::TOP).title(" largest mappings ")),
        area,
    );
}

fn draw_status(
    frame: &mut Frame,
    message_area: Rect,
    status_area: Rect,
    state: &ViewState,
    ui: &UiState,
    mode: Mode,
) {
    let traced = match &state.started {
        Some(s) => format!(
            "{} · {} process{} at start{} · hook {}",
            s.selection,
            s.processes,
            if s.processes == 1 { "" } else { "es" },
            if s.follows { " (and new ones)" } else { "" },
            s.mem_hook
        ),
        None => "attaching…".to_owned(),
    };
    let sort = format!("sort {}{}", ui.sort.name(), if ui.reversed { "▲" } else { "▼" });
    let filter = if ui.editing_filter {
        format!(" · filter: {}_", ui.filter)
    } else if ui.filter.is_empty() {
        String::new()
    } else {
        format!(" · filter '{}'", ui.filter)
    };
    let (head, tail, message) = match mode {
        Mode::Live { message, messages } => {
            let st = &state.stats;
            let dropped = st.dropped.max(state.dropped_total);
            let head = if state.finished { "ended" } else { "live" };
            let tail = format!(
                " · {:.0} events/s · {} dropped{} · {sort}{filter} │ q quit  s/1-9 sort  / filter  ↑↓ select",
                st.events_per_s,
                dropped,
                if st.probe_attach_failures > 0 {
                    format!(" · {} without GC probes", st.probe_attach_failures)
                } else {
                    String::new()
                }
            );
            let message = match message {
                Some(m) => format!("[{messages}] {m}"),
                None => String::new(),
            };
            (head.to_owned(), tail, message)
        }
        Mode::Browse { cursor } => {
            let first = state.first_ts.unwrap_or(cursor);
            let head = format!("replay {} (+{:.0} s)", clock(cursor), cursor - first);
            let tail = format!(" · {sort}{filter} │ ←→ 1 s  [] 30 s  Home/End  q quit  s sort  / filter");
            (head, tail, String::new())
        }
    };
    frame.render_widget(
        Paragraph::new(Span::styled(message, Style::default().fg(Color::Yellow))),
        message_area,
    );
    let line = Line::from(vec![
        Span::styled(format!(" {head} "), Style::default().add_modifier(Modifier::REVERSED)),
        Span::raw(format!(" {traced}{tail}")),
    ]);
    frame.render_widget(Paragraph::new(line), status_area);
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
