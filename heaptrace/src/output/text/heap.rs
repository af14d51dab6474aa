//! `heaptrace heap`'s answer as text: the classes (or sampled sites) first,
//! then why the top ones are alive, then what it cost the process.

use std::io::{self, Write};

use crate::{
    heap::{ClassStats, HeapMode, HeapReport, RetainerPath, SampledSite},
    units::{fmt_bytes, fmt_delta, fmt_duration},
};

/// Steps of a retainer path shown before the middle is elided (the JSON has
/// them all): the first two say which root, the last ones what holds it.
const PATH_HEAD: usize = 2;
const PATH_TAIL: usize = 7;

pub fn write_heap_report(out: &mut dyn Write, report: &HeapReport, top: usize) -> io::Result<()> {
    match report.mode {
        HeapMode::Sample => sites(out, report, top)?,
        HeapMode::Diff => diff(out, report, top)?,
        HeapMode::Summary => summary(out, report, top)?,
    }
    if !report.retainers.is_empty() {
        writeln!(out, "\nWhy they are alive (shortest path of strong references from a GC root):")?;
        for r in &report.retainers {
            writeln!(out, "  {}", r.instance)?;
            writeln!(out, "    {}", path(r))?;
        }
    }
    cost(out, report)
}

fn summary(out: &mut dyn Write, report: &HeapReport, top: usize) -> io::Result<()> {
    writeln!(
        out,
        "JS heap of pid {}: {} in use; classes by retained size:",
        report.pid,
        fmt_bytes(report.cost.heap_used_bytes as f64)
    )?;
    writeln!(out, "  {:<32} {:>10} {:>12} {:>12}", "CLASS", "COUNT", "SELF", "RETAINED")?;
    for c in report.classes.iter().take(top) {
        writeln!(
            out,
            "  {:<32} {:>10} {:>12} {:>12}",
            clip(&c.name, 32),
            c.count,
            fmt_bytes(c.self_bytes as f64),
            fmt_bytes(c.retained_bytes as f64)
        )?;
    }
    Ok(())
}

fn diff(out: &mut dyn Write, report: &HeapReport, top: usize) -> io::Result<()> {
    let over = report.over_seconds.map_or(String::new(), |s| format!(" in {}", fmt_duration(s)));
    let (user, internal): (Vec<&ClassStats>, Vec<&ClassStats>) =
        report.classes.iter().partition(|c| c.is_user_class());
    let grown: Vec<&&ClassStats> = user.iter().filter(|c| c.grew()).collect();
    writeln!(
        out,
        "What grew in pid {}'s JS heap{over} (objects allocated in between and still alive):",
        report.pid
    )?;
    if grown.is_empty() {
        writeln!(out, "  nothing: no class gained objects that stayed alive")?;
    } else {
        writeln!(
            out,
            "  {:<32} {:>8} {:>9} {:>11} {:>13} {:>10} {:>12}",
            "CLASS", "NEW", "COUNT Δ", "SELF Δ", "HELD BY NEW", "COUNT", "RETAINED"
        )?;
        for c in grown.iter().take(top) {
            writeln!(
                out,
                "  {:<32} {:>8} {:>+9} {:>11} {:>13} {:>10} {:>12}",
                clip(&c.name, 32),
                c.new_count.unwrap_or(0),
                c.count_delta.unwrap_or(0),
                fmt_delta(c.self_bytes_delta.unwrap_or(0)),
                fmt_bytes(c.new_retained_bytes.unwrap_or(0) as f64),
                c.count,
                fmt_bytes(c.retained_bytes as f64)
            )?;
        }
    }
    let mut v8: Vec<&&ClassStats> =
        internal.iter().filter(|c| c.self_bytes_delta.unwrap_or(0) != 0).collect();
    v8.sort_by_key(|c| std::cmp::Reverse(c.self_bytes_delta.unwrap_or(0).unsigned_abs()));
    if !v8.is_empty() {
        let parts: Vec<String> = v8
            .iter()
            .take(4)
            .map(|c| format!("{} {}", c.name, fmt_delta(c.self_bytes_delta.unwrap_or(0))))
            .collect();
        writeln!(out, "  V8's own objects: {}", parts.join(", "))?;
    }
    Ok(())
}

fn sites(out: &mut dyn Write, report: &HeapReport, top: usize) -> io::Result<()> {
    let over = report.over_seconds.map_or(String::new(), |s| format!(" over {}", fmt_duration(s)));
    writeln!(out, "Allocated{over} in pid {} and still alive, by function (sampled):", report.pid)?;
    if report.sites.is_empty() {
        writeln!(out, "  nothing allocated in the sampling period is still alive")?;
        return Ok(());
    }
    let total: u64 = report.sites.iter().map(|s| s.live_bytes).sum();
    for s in report.sites.iter().take(top) {
        writeln!(
            out,
            "  {:>10} {:>4.0} %  {}",
            fmt_bytes(s.live_bytes as f64),
            100.0 * s.live_bytes as f64 / total.max(1) as f64,
            site(s)
        )?;
        if let Some(caller) = s.stack.first() {
            writeln!(out, "  {:>18}← {caller}", "")?;
        }
    }
    Ok(())
}

fn site(s: &SampledSite) -> String {
    if s.url.is_empty() {
        return s.function.clone();
    }
    format!("{} ({}:{})", s.function, s.url, s.line)
}

/// `(GC roots) → … → leaks: Array → [1289]: Object`.
pub fn path(r: &RetainerPath) -> String {
    let step = |s: &crate::heap::PathStep| {
        if s.edge.is_empty() { s.node.clone() } else { format!("{}: {}", s.edge, s.node) }
    };
    let steps: Vec<String> = r.path.iter().map(step).collect();
    if steps.len() <= PATH_HEAD + PATH_TAIL + 1 {
        return steps.join(" → ");
    }
    let mut shown = steps[..PATH_HEAD].to_vec();
    shown.push(format!("… {} more …", steps.len() - PATH_HEAD - PATH_TAIL));
    shown.extend_from_slice(&steps[steps.len() - PATH_TAIL..]);
    shown.join(" → ")
}

fn cost(out: &mut dyn Write, report: &HeapReport) -> io::Result<()> {
    let c = &report.cost;
    let inspector = if c.opened_inspector { "opened and closed again" } else { "found open and left open" };
    if c.snapshot_ms.is_empty() {
        writeln!(out, "\nCost: no snapshot (no pause); inspector {inspector}.")?;
    } else {
        let each: Vec<String> = c
            .snapshot_ms
            .iter()
            .zip(&c.snapshot_bytes)
            .map(|(ms, bytes)| format!("{ms:.0} ms ({})", fmt_bytes(*bytes as f64)))
            .collect();
        writeln!(
            out,
            "\nCost: snapshots took {} from request to last byte (about the process's pause); inspector {inspector}.",
            each.join(", ")
        )?;
    }
    for path in &c.saved {
        writeln!(out, "Saved {} (mode 0600: it holds the process's data).", path.display())?;
    }
    Ok(())
}

fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut clipped: String = s.chars().take(width - 1).collect();
    clipped.push('…');
    clipped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::{Cost, PathStep};

    fn step(edge: &str, node: &str) -> PathStep {
        PathStep { edge: edge.into(), edge_type: "property".into(), node: node.into() }
    }

    #[test]
    fn a_diff_reads_top_down() {
        let report = HeapReport {
            pid: 42,
            mode: HeapMode::Diff,
            over_seconds: Some(30.0),
            classes: vec![
                ClassStats {
                    name: "Object".into(),
                    count: 301,
                    self_bytes: 9632,
                    retained_bytes: 240_000_000,
                    count_delta: Some(300),
                    self_bytes_delta: Some(9600),
                    new_count: Some(300),
                    new_retained_bytes: Some(240_004_800),
                },
                ClassStats {
                    name: "(array)".into(),
                    self_bytes_delta: Some(240_000_000),
                    count_delta: Some(300),
                    ..Default::default()
                },
            ],
            retainers: vec![RetainerPath {
                class: "Object".into(),
                instance: "Object { name, arr }".into(),
                path: vec![step("", "(GC roots)"), step("leaks", "Array"), step("[299]", "Object")],
            }],
            cost: Cost {
                heap_used_bytes: 250 << 20,
                snapshot_ms: vec![410.0, 440.0],
                snapshot_bytes: vec![40 << 20, 41 << 20],
                opened_inspector: true,
                saved: vec![],
            },
            ..Default::default()
        };
        let mut out = Vec::new();
        write_heap_report(&mut out, &report, 10).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("What grew in pid 42's JS heap in 30 s"), "{text}");
        let object_line = text.lines().find(|l| l.trim_start().starts_with("Object")).unwrap();
        assert!(object_line.contains("+300") && object_line.contains("228.9 MiB"), "{object_line}");
        assert!(text.contains("V8's own objects: (array) +228.9 MiB"), "{text}");
        assert!(text.contains("(GC roots) → leaks: Array → [299]: Object"), "{text}");
        assert!(
            text.contains("took 410 ms (40.0 MiB), 440 ms (41.0 MiB) from request to last byte"),
            "{text}"
        );
    }

    #[test]
    fn long_paths_keep_their_ends() {
        let r = RetainerPath {
            path: (0..20).map(|i| step(&format!("e{i}"), "N")).collect(),
            ..Default::default()
        };
        let p = path(&r);
        assert!(p.starts_with("e0: N → e1: N → … 11 more … → e13: N"), "{p}");
        assert!(p.ends_with("e19: N"), "{p}");
    }
}
