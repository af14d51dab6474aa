//! The page: the kept state as one self-contained HTML document. Nothing
//! is fetched (a Content-Security-Policy says so to the browser), no
//! script runs: hover details are SVG `<title>`s. Pure: state in, text out.

use std::fmt::Write;

use super::{
    charts,
    state::{GroupState, ProcessState, ReportState},
    svg::esc,
};
use crate::{
    core::{
        gc::PauseQuantiles,
        record::{Death, Verdict, VerdictState},
        sites::AllocationSite,
    },
    output::{
        ProcessSites,
        flamegraph::{self, Weight},
        text::{clock, container_label, group_label, verdict_label},
    },
    units::{fmt_bytes, fmt_delta, fmt_duration},
};

/// Sites listed in a process's table (the flame graph draws them all).
const SITES_SHOWN: usize = 20;
/// GCs listed under a death, as V8's "Last few GCs" does.
const DEATH_GCS_SHOWN: usize = 10;

/// The browser may fetch nothing: no script, no font, no image but inline
/// data; styles only from the page itself.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em auto; max-width: 940px; color: #222; background: #fff; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; border-top: 2px solid #ccc; padding-top: .6em; margin-top: 2em; }
h3 { font-size: 1.05em; margin: 1.2em 0 .4em; }
table { border-collapse: collapse; font-size: 13px; } td, th { padding: 2px 8px; text-align: left; vertical-align: top; }
th { border-bottom: 1px solid #aaa; } td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #f6f6f6; }
.verdict { padding: .5em .8em; border-left: 6px solid #999; background: #f4f4f4; }
.verdict.leak, .verdict.gc-thrashing { border-color: #c0392b; background: #fdecea; }
.verdict.growing { border-color: #e67e22; background: #fef5e7; } .verdict.steady { border-color: #27ae60; background: #eafaf1; }
.warning { color: #a00; } .muted { color: #666; } code { font-size: 12px; }
.legend span { margin-right: 1.2em; white-space: nowrap; } .legend i { display: inline-block; width: 18px; height: 3px; vertical-align: middle; margin-right: 4px; }
svg.chart { display: block; max-width: 100%; height: auto; font: 11px sans-serif; }
svg.chart .frame { fill: #fff; stroke: #999; } svg.chart .grid { stroke: #eee; }
svg.chart .ytick { text-anchor: end; fill: #555; } svg.chart .xtick { text-anchor: middle; fill: #555; }
svg.chart polyline { fill: none; stroke-width: 1.5; }
.rss { stroke: #1f77b4; } .committed { stroke: #ff7f0e; } .native { stroke: #9467bd; stroke-dasharray: 4 3; }
.usage { stroke: #8c564b; } .js-heap { stroke: #2ca02c; stroke-width: 1 !important; opacity: .7; }
circle.gc-minor { fill: #2ca02c; } circle.gc-major { fill: #d62728; } circle.floor { fill: none; stroke: #000; stroke-width: 1.5; }
circle.gc-minute { fill: #bbb; } rect.gc-minute { fill: #2ca02c; opacity: .25; }
.floor-fit { stroke: #d62728; stroke-width: 2; stroke-dasharray: 6 4; } .limit { stroke: #000; stroke-dasharray: 2 3; }
.limit-label { fill: #000; } line.gc-drop { stroke: #2ca02c; opacity: .5; }
rect.bucket.minor { fill: #2ca02c; } rect.bucket.major { fill: #d62728; }
svg.chart.histogram .xtick { font-size: 9px; }
.flame svg { display: block; width: 100%; height: auto; }
.flame text { font-family: Verdana, sans-serif; font-size: 12px; }
.flame #title, .flame #subtitle { text-anchor: middle; } .flame #title { font-size: 17px; }
.flame #search, .flame #matched, .flame #unzoom, .flame #details, .flame .hide { display: none; }
.flame #frames > g:hover { stroke: #000; stroke-width: .5; }
"#;

/// A legend entry: its class (for the colour) and its words.
fn legend(entries: &[(&str, &str)]) -> String {
    let mut out = String::from(r#"<p class="legend">"#);
    for (class, words) in entries {
        let colour = match *class {
            "rss" => "#1f77b4",
            "committed" => "#ff7f0e",
            "native" => "#9467bd",
            "js-heap" | "gc-minor" => "#2ca02c",
            "gc-major" | "floor-fit" => "#d62728",
            "usage" => "#8c564b",
            _ => "#000",
        };
        let _ = write!(out, r#"<span><i style="background:{colour}"></i>{}</span>"#, esc(words));
    }
    out.push_str("</p>");
    out
}

/// `2026-05-01 12:00:00 UTC` of a Unix time (Howard Hinnant's
/// days-to-civil: no calendar crate for one line of a report).
pub fn utc(ts: f64) -> String {
    let days = (ts.max(0.0) / 86_400.0).floor() as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {} UTC", clock(ts))
}

/// The verdict's block: its label and slope, its evidence sentence (as the
/// text output words it), and the time to its limit.
fn verdict_block(v: &Verdict) -> String {
    let slope = match (v.state, v.slope_bytes_per_s) {
        (VerdictState::Growing | VerdictState::Leak | VerdictState::GcThrashing, Some(r)) => {
            format!(" {}/min", fmt_delta((r * 60.0) as i64))
        }
        _ => String::new(),
    };
    let mut out = format!(
        r#"<div class="verdict {}"><p><b>{}{}</b>: {}</p>"#,
        v.state.name(),
        esc(&verdict_label(v)),
        esc(&slope),
        esc(&v.evidence)
    );
    match (v.time_to_limit_s, v.limit) {
        (Some(t), Some(limit)) => {
            let bytes = v.limit_bytes.map_or(String::new(), |b| format!(" ({})", fmt_bytes(b as f64)));
            let _ = write!(out, "<p>Time to limit: the {} limit{bytes} in <b>{}</b> at this slope.</p>", limit.name(), fmt_duration(t));
        }
        _ => out.push_str(r#"<p class="muted">Time to limit: none forecast (memory does not grow, or no limit is known).</p>"#),
    }
    if let Some(site) = &v.site {
        let _ = write!(
            out,
            "<p>Most of that growth ({:.0} %, {}) came from <code>{}</code>.</p>",
            site.share * 100.0,
            fmt_bytes(site.bytes as f64),
            esc(&site.frame.label())
        );
    }
    out.push_str("</div>");
    out
}

fn quantiles_row(kind: &str, q: &PauseQuantiles) -> String {
    format!(
        r#"<tr><td>{kind}</td><td class="n">{}</td><td class="n">{:.2}</td><td class="n">{:.2}</td><td class="n">{:.2}</td><td class="n">{:.2}</td></tr>"#,
        q.count, q.p50_ms, q.p90_ms, q.p99_ms, q.max_ms
    )
}

fn sites_table(sites: &[AllocationSite], unnamed: u64) -> String {
    let mut out = String::from(
        r#"<table class="sites"><tr><th class="n">live</th><th class="n">allocated</th><th class="n">calls</th><th>site (hover for its stack)</th></tr>"#,
    );
    for s in sites.iter().take(SITES_SHOWN) {
        let stack: Vec<String> = s.frames.iter().map(|f| f.label()).collect();
        let _ = write!(
            out,
            r#"<tr class="site"><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td title="{}"><code>{}</code></td></tr>"#,
            fmt_bytes(s.live_bytes as f64),
            fmt_bytes(s.bytes as f64),
            s.count,
            esc(&stack.join("\n")),
            esc(&s.headline_with_caller())
        );
    }
    out.push_str("</table>");
    if sites.len() > SITES_SHOWN {
        let _ = write!(
            out,
            r#"<p class="muted">{} more sites in the flame graph and in <code>-o json</code>.</p>"#,
            sites.len() - SITES_SHOWN
        );
    }
    if unnamed > 0 {
        let _ = write!(
            out,
            r#"<p class="muted">{unnamed} allocating calls whose stack was lost before it was read.</p>"#
        );
    }
    out
}

/// inferno's SVG made fit to live inside the page: no XML prolog, no
/// script or event handlers (the page runs none; frames keep their
/// `<title>` hover text), no style of its own (the page's, scoped to
/// `.flame`, stands in), no comments or namespaces with URLs in them.
pub fn inline_flame_graph(svg: &str) -> String {
    let mut s = svg.to_owned();
    for (open, close) in [
        ("<?xml", "?>"),
        ("<!DOCTYPE", ">"),
        ("<!--", "-->"),
        ("<script", "</script>"),
        ("<style", "</style>"),
    ] {
        while let Some(at) = s.find(open) {
            let Some(len) = s[at..].find(close) else { break };
            s.replace_range(at..at + len + close.len(), "");
        }
    }
    for attr in [
        r#" onload="init(evt)""#,
        r#" xmlns:xlink="http://www.w3.org/1999/xlink""#,
        r#" xmlns:fg="http://github.com/jonhoo/inferno""#,
    ] {
        s = s.replace(attr, "");
    }
    s.trim().to_owned()
}

/// The flame graph of a process's sites, by live bytes (where the growth
/// is), else by allocated bytes; None when it has no site with either.
fn flame_graph(p: &ProcessState, sites: &[AllocationSite]) -> Option<(String, Weight)> {
    let processes = [ProcessSites { pid: p.pid, name: &p.comm, sites }];
    [Weight::Live, Weight::Allocated].into_iter().find_map(|w| {
        let svg = flamegraph::render_svg(&processes, w).ok()?;
        Some((inline_flame_graph(&String::from_utf8_lossy(&svg)), w))
    })
}

fn process_section(out: &mut String, p: &ProcessState) {
    let _ = write!(
        out,
        r#"<section class="process" id="pid-{0}" data-pid="{0}"><h2>{1} (pid {0})</h2>"#,
        p.pid,
        esc(&p.comm)
    );
    if let Some(c) = &p.container {
        let _ = write!(out, "<p>In container {}.</p>", esc(&container_label(c)));
    }
    if let Some(ended) = &p.ended {
        let _ = write!(out, r#"<p class="warning">It {}.</p>"#, esc(ended));
    }
    match &p.verdict {
        Some(v) => out.push_str(&verdict_block(v)),
        None => out.push_str(r#"<div class="verdict unknown"><p>No verdict yet.</p></div>"#),
    }
    if let Some(s) = &p.summary {
        let _ = write!(out, "<p><b>{}</b></p><p>{}</p>", esc(&s.answer), esc(&s.finding));
    }

    out.push_str("<h3>Memory</h3>");
    if p.memory.is_empty() && p.gcs.total == 0 {
        out.push_str(r#"<p class="muted">No snapshot of it was seen.</p>"#);
    } else {
        out.push_str(&charts::memory(p));
        let mut entries = vec![
            ("rss", "RSS"),
            ("committed", "committed"),
            ("native", "native (outside V8's heap)"),
            ("js-heap", "JS heap used, before/after each GC (dots: minor GCs)"),
            ("gc-major", "major GCs"),
            ("floor", "○ floor after major GCs"),
            ("floor-fit", "floor's fitted line"),
        ];
        if p.v8_limit.is_some() {
            entries.push(("limit", "V8 heap limit (dotted)"));
        }
        out.push_str(&legend(&entries));
        if p.memory.stride() > 1 {
            let _ = write!(
                out,
                r#"<p class="muted">Each point stands for {} snapshots (their peaks).</p>"#,
                p.memory.stride()
            );
        }
    }

    if p.gcs.total > 0 {
        out.push_str("<h3>GC pauses</h3>");
        out.push_str(&charts::pauses(&p.gcs));
        out.push_str(&charts::histogram(&p.gcs));
        out.push_str(&legend(&[("gc-minor", "minor GCs"), ("gc-major", "major GCs")]));
        if !p.gcs.minutes.is_empty() {
            let _ = write!(
                out,
                r#"<p class="muted">{} GCs in all; the last {} one by one, older ones as their minute's longest pause (grey).</p>"#,
                p.gcs.total,
                p.gcs.recent.len()
            );
        }
        if let Some(gc) = p.summary.as_ref().and_then(|s| s.gc.as_ref()) {
            let _ = write!(
                out,
                r#"<p>{} pauses ({:.1}/s), {:.1} ms in all, {:.2} % of wall time; GC work on the main thread in all {:.2} %.</p><table class="quantiles"><tr><th>pauses</th><th class="n">count</th><th class="n">p50 ms</th><th class="n">p90 ms</th><th class="n">p99 ms</th><th class="n">max ms</th></tr>{}{}</table>"#,
                gc.count,
                gc.gcs_per_s,
                gc.total_pause_ms,
                gc.pause_time_share * 100.0,
                gc.main_thread_share * 100.0,
                quantiles_row("minor", &gc.minor),
                quantiles_row("major", &gc.major)
            );
        }
    }

    if !p.verdict_changes.is_empty() {
        out.push_str(r#"<h3>Verdict changes</h3><table class="verdicts"><tr><th>time</th><th>was</th><th>now, and why</th></tr>"#);
        for v in &p.verdict_changes {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                clock(v.ts),
                v.previous.name(),
                esc(&v.verdict.evidence)
            );
        }
        out.push_str("</table>");
    }

    if let Some(s) = p.summary.as_ref().filter(|s| !s.allocation_sites.is_empty()) {
        out.push_str("<h3>Top allocation sites</h3>");
        out.push_str(&sites_table(&s.allocation_sites, s.unnamed_stack_calls));
        if let Some((svg, weight)) = flame_graph(p, &s.allocation_sites) {
            let what = if weight == Weight::Live {
                "live bytes (where the growth is)"
            } else {
                "allocated bytes (nothing is live)"
            };
            let _ = write!(out, r#"<h3>Flame graph: {what}</h3><div class="flame">{svg}</div>"#);
        }
    }
    out.push_str("</section>");
}

fn group_section(out: &mut String, n: usize, g: &GroupState, members: &[&ProcessState]) {
    let l = &g.latest;
    let _ = write!(
        out,
        r#"<section class="group" id="group-{n}"><h2>{}</h2>"#,
        esc(&group_label(l.container.as_ref(), &l.cgroup_path))
    );
    out.push_str(&verdict_block(&l.verdict));
    let usage = match (l.memory_usage_bytes, l.memory_limit_bytes) {
        (Some(u), Some(lim)) => format!(
            "cgroup memory {} of its {} limit ({} headroom).",
            fmt_bytes(u as f64),
            fmt_bytes(lim as f64),
            fmt_bytes(lim.saturating_sub(u) as f64)
        ),
        (Some(u), None) => format!("cgroup memory {} (no limit).", fmt_bytes(u as f64)),
        _ => String::new(),
    };
    let _ = write!(
        out,
        "<p>{} traced processes, {} exited; RSS {}. {usage}</p>",
        l.processes,
        l.exited_processes,
        fmt_bytes(l.rss_bytes as f64)
    );
    out.push_str(&charts::group(g));
    out.push_str(&legend(&[
        ("usage", "cgroup usage"),
        ("rss", "RSS of its traced processes"),
        ("limit", "cgroup limit (dotted)"),
    ]));
    if !members.is_empty() {
        out.push_str("<p>Its processes: ");
        let links: Vec<String> = members
            .iter()
            .map(|p| format!(r##"<a href="#pid-{0}">{1} ({0})</a>"##, p.pid, esc(&p.comm)))
            .collect();
        out.push_str(&links.join(", "));
        out.push_str("</p>");
    }
    out.push_str("</section>");
}

fn death_section(out: &mut String, d: &Death) {
    let _ = write!(
        out,
        r#"<section class="death" id="death-{0}-{1}" data-pid="{0}"><h2>Death of {2} (pid {0}) at {3}: {4}</h2><p>{5}</p>"#,
        d.pid,
        d.ts as u64,
        esc(&d.comm),
        clock(d.ts),
        d.cause.name(),
        esc(&d.explanation)
    );
    let m = &d.memory;
    let heap = match (m.js_heap_used_bytes, m.v8_heap_limit_bytes) {
        (Some(h), Some(l)) => format!("; JS heap {} of {}", fmt_bytes(h as f64), fmt_bytes(l as f64)),
        (Some(h), None) => format!("; JS heap {}", fmt_bytes(h as f64)),
        _ => String::new(),
    };
    let _ = write!(
        out,
        "<p>At death: RSS {} (anon {}, file {}, shmem {}){heap}{}.</p>",
        fmt_bytes((m.rss_anon_bytes + m.rss_file_bytes + m.rss_shmem_bytes) as f64),
        fmt_bytes(m.rss_anon_bytes as f64),
        fmt_bytes(m.rss_file_bytes as f64),
        fmt_bytes(m.rss_shmem_bytes as f64),
        d.signal.as_ref().map_or(String::new(), |s| format!("; signal {}", esc(s)))
    );
    if let Some(v) = &d.verdict {
        out.push_str(&verdict_block(v));
    }
    if let Some(path) = &d.dump_path {
        let _ = write!(out, "<p>Its flight recording is in <code>{}</code>.</p>", esc(path));
    }
    match &d.flight {
        Some(f) if !f.memory.is_empty() || !f.gcs.is_empty() => {
            out.push_str("<h3>Its last minutes</h3>");
            let limit = m.v8_old_generation_limit_bytes.or(m.v8_heap_limit_bytes);
            out.push_str(&charts::flight(f, limit));
            out.push_str(&legend(&[
                ("rss", "RSS"),
                ("committed", "committed"),
                ("native", "native"),
                ("js-heap", "JS heap"),
                ("gc-major", "GCs"),
            ]));
            if !f.gcs.is_empty() {
                out.push_str(r#"<h3>Its last GCs</h3><table class="last-gcs"><tr><th>time</th><th>collector</th><th class="n">heap before</th><th class="n">after</th><th class="n">pause ms</th><th>reason</th></tr>"#);
                for g in f.gcs.iter().rev().take(DEATH_GCS_SHOWN).rev() {
                    let _ = write!(
                        out,
                        r#"<tr><td>{}</td><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{:.2}</td><td>{}</td></tr>"#,
                        clock(g.ts),
                        esc(g.collector),
                        fmt_bytes(g.heap_before_bytes as f64),
                        fmt_bytes(g.heap_after_bytes as f64),
                        g.pause_ms,
                        esc(g.reason)
                    );
                }
                out.push_str("</table>");
            }
        }
        _ => out.push_str(r#"<p class="muted">No flight recording came with this death.</p>"#),
    }
    out.push_str("</section>");
}

/// The whole page.
pub fn render(state: &ReportState) -> String {
    let mut out = String::with_capacity(256 << 10);
    let first_ts = state.start.as_ref().map_or(state.last_ts, |s| s.ts);
    let title = match state.processes.values().next() {
        Some(p) if state.processes.len() == 1 => format!("heaptrace: {} (pid {})", p.comm, p.pid),
        _ => format!("heaptrace: {} processes", state.processes.len()),
    };
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="{CSP}"><meta name="viewport" content="width=device-width, initial-scale=1"><meta name="generator" content="heaptrace {}"><title>{}</title><style>{STYLE}</style></head><body><h1>{}</h1>"#,
        env!("CARGO_PKG_VERSION"),
        esc(&title),
        esc(&title)
    );
    let _ = write!(out, "<p>Traced from {} to {}", utc(first_ts), clock(state.last_ts));
    if let Some(d) = state.duration_s {
        let _ = write!(out, " ({})", fmt_duration(d));
    }
    if let Some(s) = &state.start {
        let _ = write!(out, "; selection <code>{}</code>; memory hook {}", esc(&s.selection), s.mem_hook);
    }
    out.push_str(". Hover a point or a bar for its figures.</p>");
    if state.dropped_events > 0 {
        let _ = write!(
            out,
            r#"<p class="warning">{} kernel events were lost: mapping figures may be off.</p>"#,
            state.dropped_events
        );
    }
    for (n, what) in [
        (state.processes_dropped, "processes"),
        (state.groups_dropped, "groups"),
        (state.deaths_dropped, "deaths"),
    ] {
        if n > 0 {
            let _ = write!(
                out,
                r#"<p class="muted">{n} older {what} are not shown (the report keeps the latest).</p>"#
            );
        }
    }

    // Contents: one line per process, with its verdict.
    out.push_str(
        r#"<table class="contents"><tr><th>process</th><th>verdict</th><th class="n">RSS</th></tr>"#,
    );
    for p in state.processes.values() {
        let rss = p.memory.points().last().map_or(String::new(), |m| fmt_bytes(m.rss as f64));
        let verdict = p.verdict.as_ref().map_or("-".into(), verdict_label);
        let _ = write!(
            out,
            r##"<tr><td><a href="#pid-{0}">{1} ({0})</a></td><td>{2}</td><td class="n">{rss}</td></tr>"##,
            p.pid,
            esc(&p.comm),
            esc(&verdict)
        );
    }
    out.push_str("</table>");

    for (n, g) in state.groups.values().enumerate() {
        let members: Vec<&ProcessState> = state
            .processes
            .values()
            .filter(|p| p.cgroup_id != 0 && p.cgroup_id == g.latest.cgroup_id)
            .collect();
        group_section(&mut out, n, g, &members);
    }
    for p in state.processes.values() {
        process_section(&mut out, p);
    }
    for d in &state.deaths {
        death_section(&mut out, d);
    }
    let _ = write!(
        out,
        r#"<footer><p class="muted">Written by heaptrace {}. All times UTC.</p></footer></body></html>"#,
        env!("CARGO_PKG_VERSION")
    );
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400.0), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_777_636_800.0 + 3661.0), "2026-05-01 13:01:01 UTC");
    }

    #[test]
    fn the_flame_graph_is_inlined_without_script_or_urls() {
        let svg = r#"<?xml version="1.0" standalone="no"?><!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd"><svg version="1.1" width="1200" onload="init(evt)" xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:fg="http://github.com/jonhoo/inferno"><!--See https://github.com/brendangregg/FlameGraph--><style type="text/css">text {}</style><script type="text/ecmascript"><![CDATA[var x = 1;]]></script><g><title>f (1 bytes)</title></g></svg>"#;
        assert_eq!(
            inline_flame_graph(svg),
            r#"<svg version="1.1" width="1200" xmlns="http://www.w3.org/2000/svg"><g><title>f (1 bytes)</title></g></svg>"#
        );
    }
}
