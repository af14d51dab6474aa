//! The report's charts, each a function from the kept state to one SVG.
//! Every data point is an element (a polyline's vertex, a circle, a bar)
//! counted in the chart's `data-points`, with per-kind counts beside it
//! (`data-snapshots`, `data-gcs`, ...) for tests and curious readers.

use super::{
    state::{FloorPoint, GcLog, GcMark, GroupState, PAUSE_BOUNDS_MS, PAUSE_BUCKETS, ProcessState},
    svg::{Chart, byte_ticks, log_ms_ticks, time_ticks},
};
use crate::{
    core::{
        gc::GcKind,
        recorder::FlightRecording,
        verdict::{FLOOR_WINDOW_S, fit},
    },
    units::{fmt_bytes, fmt_delta},
};

/// A limit is drawn when it is at most this many times the data's top;
/// above, it would flatten the data to a line, and is named instead.
const LIMIT_IN_VIEW: f64 = 3.0;

/// A straight line fitted to the floor, drawn from its first to its last
/// point in the window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FloorFit {
    pub from: (f64, f64),
    pub to: (f64, f64),
    pub slope_bytes_per_s: f64,
    pub r2: f64,
    pub points: usize,
}

/// The least-squares line through the floor's points of the verdict's
/// window (the last [`FLOOR_WINDOW_S`] before the latest), as the verdict
/// fits it; None with fewer than two points.
pub fn floor_fit(points: &[FloorPoint]) -> Option<FloorFit> {
    let last = points.last()?.ts;
    let window: Vec<(f64, f64)> =
        points.iter().filter(|p| p.ts >= last - FLOOR_WINDOW_S).map(|p| (p.ts, p.bytes as f64)).collect();
    let f = fit(window.iter())?;
    let first = window.first()?.0;
    Some(FloorFit {
        from: (first, f.at_end - f.slope * f.span_s),
        to: (last, f.at_end),
        slope_bytes_per_s: f.slope,
        r2: f.r2,
        points: f.points,
    })
}

fn mib(v: u64) -> String {
    fmt_bytes(v as f64)
}

fn gc_title(g: &GcMark) -> String {
    format!(
        "{} {} {} -> {}, {:.2} ms, {}",
        super::super::text::clock(g.ts),
        g.collector,
        mib(g.before),
        mib(g.after),
        g.pause_ns as f64 / 1e6,
        g.reason
    )
}

fn gc_class(kind: GcKind) -> &'static str {
    match kind {
        GcKind::Minor => "gc gc-minor",
        GcKind::Major | GcKind::Unknown => "gc gc-major",
    }
}

/// The x range of a set of timestamps.
fn span(ts: impl Iterator<Item = f64>) -> (f64, f64) {
    ts.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), t| (lo.min(t), hi.max(t)))
}

/// RSS, committed and native memory per snapshot; the JS heap before and
/// after each GC (a mark per GC, older GCs as per-minute ranges); the floor
/// after major GCs with its fitted line; V8's limit when known.
pub fn memory(p: &ProcessState) -> String {
    let mem: Vec<_> = p.memory.points().collect();
    let floor: Vec<_> = p.floor.points().collect();
    let gcs = &p.gcs;
    let (lo, hi) = span(
        mem.iter()
            .map(|m| m.ts)
            .chain(gcs.recent.iter().map(|g| g.ts))
            .chain(gcs.minutes.iter().flat_map(|m| [m.minute as f64 * 60.0, m.minute as f64 * 60.0 + 59.0])),
    );
    let top = mem
        .iter()
        .map(|m| m.rss.max(m.committed))
        .chain(gcs.recent.iter().map(|g| g.before))
        .chain(gcs.minutes.iter().map(|m| m.max_before))
        .max()
        .unwrap_or(0) as f64;
    let limit = p.v8_limit.filter(|&l| l as f64 <= top * LIMIT_IN_VIEW);
    let ymax = top.max(limit.unwrap_or(0) as f64).max(1.0) * 1.05;
    let mut c = Chart::new(320.0, (lo, hi), (0.0, ymax), false);
    c.axes(&time_ticks(lo, hi), &byte_ticks(ymax));

    if let Some(l) = limit {
        c.segment("limit", (lo, l as f64), (hi, l as f64), &format!("V8 heap limit {}", mib(l)));
        c.label("limit-label", lo, l as f64, &format!("V8 heap limit {}", mib(l)));
    } else if let Some(l) = p.v8_limit {
        c.label("limit-label", lo, ymax, &format!("V8 heap limit {} (above the chart)", mib(l)));
    }
    // Older GCs: one range per minute, from its lowest heap after to its
    // highest before.
    for m in &gcs.minutes {
        let t = m.minute as f64 * 60.0;
        c.bar(
            "gc-minute",
            (t, t + 60.0),
            (m.min_after as f64, m.max_before as f64),
            m.count,
            &format!(
                "{} GCs ({} major) in the minute from {}: heap {} to {}, longest pause {:.2} ms",
                m.count,
                m.majors,
                super::super::text::clock(t),
                mib(m.min_after),
                mib(m.max_before),
                m.max_pause_ns as f64 / 1e6
            ),
        );
    }
    let heap = gcs.recent.iter().flat_map(|g| [(g.ts, g.before as f64), (g.ts, g.after as f64)]);
    // A sawtooth, two vertices per GC: the GC marks below are the points.
    c.polyline("js-heap", "JS heap used, before and after each GC", heap);
    let n = mem.len();
    c.add_points(n);
    c.polyline("rss", "RSS", mem.iter().map(|m| (m.ts, m.rss as f64)));
    c.polyline(
        "committed",
        "committed (mapped, not PROT_NONE)",
        mem.iter().map(|m| (m.ts, m.committed as f64)),
    );
    c.polyline("native", "native (outside V8's heap)", mem.iter().map(|m| (m.ts, m.native as f64)));
    for g in &gcs.recent {
        c.circle(gc_class(g.kind), g.ts, g.after as f64, 2.0, &gc_title(g));
    }
    for f in &floor {
        c.circle("floor", f.ts, f.bytes as f64, 3.5, &format!("floor after a major GC: {}", mib(f.bytes)));
    }
    if let Some(fit) = floor_fit(&floor) {
        c.segment(
            "floor-fit",
            fit.from,
            fit.to,
            &format!(
                "floor fitted over {} major GCs: {}/min, R² {:.2}",
                fit.points,
                fmt_delta((fit.slope_bytes_per_s * 60.0) as i64),
                fit.r2
            ),
        );
    }
    // data-points: snapshots, GC marks, minutes and floor points; each
    // kind on its own too.
    c.count("snapshots", n);
    c.count("gcs", gcs.recent.len());
    c.count("gc-minutes", gcs.minutes.len());
    c.count("floor", floor.len());
    c.finish("memory", &format!("memory of {} (pid {})", p.comm, p.pid))
}

/// Each GC's pause over time (log scale), older GCs as their minute's
/// longest pause.
pub fn pauses(gcs: &GcLog) -> String {
    let ms = |ns: u64| (ns as f64 / 1e6).max(0.01);
    let (lo, hi) = span(
        gcs.recent.iter().map(|g| g.ts).chain(gcs.minutes.iter().map(|m| m.minute as f64 * 60.0 + 30.0)),
    );
    let top = gcs
        .recent
        .iter()
        .map(|g| g.pause_ns)
        .chain(gcs.minutes.iter().map(|m| m.max_pause_ns))
        .max()
        .unwrap_or(0);
    let ymax = 10f64.powf(ms(top).log10().ceil()).max(1.0);
    let mut c = Chart::new(220.0, (lo, hi), (0.01, ymax), true);
    c.axes(&time_ticks(lo, hi), &log_ms_ticks(0.01, ymax));
    for m in &gcs.minutes {
        let title = format!(
            "{} GCs in the minute from {}: longest pause {:.2} ms, {:.1} ms in all",
            m.count,
            super::super::text::clock(m.minute as f64 * 60.0),
            m.max_pause_ns as f64 / 1e6,
            m.pause_ns as f64 / 1e6
        );
        c.circle("gc-minute", m.minute as f64 * 60.0 + 30.0, ms(m.max_pause_ns), 3.0, &title);
    }
    for g in &gcs.recent {
        c.circle(gc_class(g.kind), g.ts, ms(g.pause_ns), 2.5, &gc_title(g));
    }
    c.count("gcs", gcs.recent.len());
    c.count("gc-minutes", gcs.minutes.len());
    c.finish("pauses", "GC pauses over time")
}

/// Bucket labels: `< 0.1 ms`, `0.1-0.25 ms`, ..., `>= 1000 ms`.
pub fn bucket_label(i: usize) -> String {
    match i {
        0 => format!("< {} ms", PAUSE_BOUNDS_MS[0]),
        i if i >= PAUSE_BOUNDS_MS.len() => format!(">= {} ms", PAUSE_BOUNDS_MS[PAUSE_BOUNDS_MS.len() - 1]),
        i => format!("{}-{} ms", PAUSE_BOUNDS_MS[i - 1], PAUSE_BOUNDS_MS[i]),
    }
}

/// Every GC's pause in fixed buckets, minor and major stacked: one bar per
/// bucket and kind (empty ones too, so a bucket's place does not move).
pub fn histogram(gcs: &GcLog) -> String {
    let top = gcs.histogram.iter().map(|b| b[0] + b[1]).max().unwrap_or(0).max(1) as f64 * 1.05;
    let mut c = Chart::new(220.0, (0.0, PAUSE_BUCKETS as f64), (0.0, top), false);
    let yticks: Vec<(f64, String)> = super::svg::nice_ticks(0.0, top, 4)
        .into_iter()
        .filter(|v| v.fract() == 0.0)
        .map(|v| (v, format!("{v}")))
        .collect();
    let xticks: Vec<(f64, String)> = (0..PAUSE_BUCKETS).map(|i| (i as f64 + 0.5, bucket_label(i))).collect();
    c.axes(&xticks, &yticks);
    for (i, [minor, major]) in gcs.histogram.iter().copied().enumerate() {
        let x = (i as f64 + 0.1, i as f64 + 0.9);
        let label = bucket_label(i);
        c.bar("bucket minor", x, (0.0, minor as f64), minor, &format!("{minor} minor GCs paused {label}"));
        c.bar(
            "bucket major",
            x,
            (minor as f64, (minor + major) as f64),
            major,
            &format!("{major} major GCs paused {label}"),
        );
    }
    c.count("buckets", PAUSE_BUCKETS);
    c.count("total", gcs.histogram.iter().flatten().sum::<u64>() as usize);
    c.finish("histogram", "GC pauses by length")
}

/// A group's memory: the cgroup's usage and its processes' RSS, and its
/// limit.
pub fn group(g: &GroupState) -> String {
    let pts: Vec<_> = g.memory.points().collect();
    let (lo, hi) = span(pts.iter().map(|p| p.ts));
    let top = pts.iter().map(|p| p.rss.max(p.usage.unwrap_or(0))).max().unwrap_or(0) as f64;
    let limit = g.latest.memory_limit_bytes.filter(|&l| l as f64 <= top * LIMIT_IN_VIEW);
    let ymax = top.max(limit.unwrap_or(0) as f64).max(1.0) * 1.05;
    let mut c = Chart::new(260.0, (lo, hi), (0.0, ymax), false);
    c.axes(&time_ticks(lo, hi), &byte_ticks(ymax));
    if let Some(l) = limit {
        c.segment("limit", (lo, l as f64), (hi, l as f64), &format!("cgroup limit {}", mib(l)));
        c.label("limit-label", lo, l as f64, &format!("cgroup limit {}", mib(l)));
    } else if let Some(l) = g.latest.memory_limit_bytes {
        c.label("limit-label", lo, ymax, &format!("cgroup limit {} (above the chart)", mib(l)));
    }
    c.polyline("usage", "cgroup memory usage", pts.iter().filter_map(|p| Some((p.ts, p.usage? as f64))));
    c.polyline("rss", "RSS of its traced processes", pts.iter().map(|p| (p.ts, p.rss as f64)));
    c.add_points(pts.len());
    c.count("snapshots", pts.len());
    c.finish("group-memory", "memory of the group")
}

/// A death's last minutes from its flight recorder: RSS, committed, native
/// and the JS heap per reading, its last GCs as marks, and the limit.
pub fn flight(f: &FlightRecording, limit: Option<u64>) -> String {
    let (lo, hi) = span(f.memory.iter().map(|m| m.ts).chain(f.gcs.iter().map(|g| g.ts)));
    let rss =
        |m: &crate::core::recorder::MemoryPoint| m.rss_anon_bytes + m.rss_file_bytes + m.rss_shmem_bytes;
    let top = f
        .memory
        .iter()
        .map(|m| rss(m).max(m.committed_bytes))
        .chain(f.gcs.iter().map(|g| g.heap_before_bytes))
        .max()
        .unwrap_or(0) as f64;
    let limit = limit.filter(|&l| l as f64 <= top * LIMIT_IN_VIEW);
    let ymax = top.max(limit.unwrap_or(0) as f64).max(1.0) * 1.05;
    let mut c = Chart::new(260.0, (lo, hi), (0.0, ymax), false);
    c.axes(&time_ticks(lo, hi), &byte_ticks(ymax));
    if let Some(l) = limit {
        c.segment("limit", (lo, l as f64), (hi, l as f64), &format!("limit {}", mib(l)));
    }
    c.polyline("rss", "RSS", f.memory.iter().map(|m| (m.ts, rss(m) as f64)));
    c.polyline("committed", "committed", f.memory.iter().map(|m| (m.ts, m.committed_bytes as f64)));
    c.polyline("native", "native", f.memory.iter().map(|m| (m.ts, m.native_bytes as f64)));
    c.polyline(
        "js-heap",
        "JS heap after the latest GC",
        f.memory.iter().filter_map(|m| Some((m.ts, m.js_heap_bytes? as f64))),
    );
    for g in &f.gcs {
        let kind = if g.collector.starts_with("Mark-") { GcKind::Major } else { GcKind::Minor };
        let mark = GcMark {
            ts: g.ts,
            kind,
            collector: g.collector,
            reason: g.reason,
            pause_ns: (g.pause_ms * 1e6) as u64,
            before: g.heap_before_bytes,
            after: g.heap_after_bytes,
        };
        c.segment("gc-drop", (g.ts, g.heap_before_bytes as f64), (g.ts, g.heap_after_bytes as f64), "");
        c.circle(gc_class(kind), g.ts, g.heap_after_bytes as f64, 2.5, &gc_title(&mark));
    }
    c.add_points(f.memory.len());
    c.count("samples", f.memory.len());
    c.count("gcs", f.gcs.len());
    c.finish("flight", "its last minutes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_line_is_fitted_over_the_verdicts_window() {
        // 1 MiB a minute, plus an old point outside the window that a fit
        // over everything would bend.
        let mut pts = vec![FloorPoint { ts: 0.0, bytes: 500 << 20 }];
        pts.extend(
            (0..20).map(|i| FloorPoint { ts: 1000.0 + 30.0 * i as f64, bytes: (10 << 20) + (i << 19) }),
        );
        let f = floor_fit(&pts).unwrap();
        assert_eq!(f.points, 20);
        assert!((f.slope_bytes_per_s * 60.0 - 1048576.0).abs() < 1.0, "{f:?}");
        assert!((f.r2 - 1.0).abs() < 1e-9);
        assert_eq!(f.from.0, 1000.0);
        assert!((f.from.1 - (10 << 20) as f64).abs() < 1.0, "{f:?}");
        assert_eq!(f.to.0, 1570.0);
        assert!((f.to.1 - ((10 << 20) + (19 << 19)) as f64).abs() < 1.0, "{f:?}");
        assert!(floor_fit(&pts[..1]).is_none());
    }

    #[test]
    fn histogram_bars_hold_every_gc() {
        let mut log = GcLog::default();
        for (i, ms) in [0.05, 0.3, 0.3, 2.0, 700.0, 5000.0].into_iter().enumerate() {
            let kind = if i % 2 == 0 { GcKind::Minor } else { GcKind::Major };
            log.push(GcMark {
                ts: i as f64,
                kind,
                collector: "Scavenge",
                reason: "task",
                pause_ns: (ms * 1e6) as u64,
                before: 2,
                after: 1,
            });
        }
        let svg = histogram(&log);
        assert!(
            svg.contains(&format!(
                r#"data-points="{}" data-buckets="{PAUSE_BUCKETS}" data-total="6""#,
                2 * PAUSE_BUCKETS
            )),
            "{svg}"
        );
        let counted: u64 = svg
            .split(r#"data-count=""#)
            .skip(1)
            .map(|s| s[..s.find('"').unwrap()].parse::<u64>().unwrap())
            .sum();
        assert_eq!(counted, 6);
        assert_eq!(bucket_label(0), "< 0.1 ms");
        assert_eq!(bucket_label(2), "0.25-0.5 ms");
        assert_eq!(bucket_label(PAUSE_BUCKETS - 1), ">= 1000 ms");
        assert!(svg.contains("<title>1 major GCs paused &gt;= 1000 ms</title>"), "{svg}");
    }
}
