//! The page from records built here: what it holds, how many points each
//! chart draws, that names are escaped, that nothing points outside it,
//! and how it is written.

use super::*;
use crate::core::{
    Event, EventKind, Input, MemHook, MemOp, Model, ModelConfig, ProcessInfo,
    gc::GcKind,
    record::{
        Death, DeathCause, DeathMemory, Gc, MemorySource, SCHEMA_VERSION, Snapshot, Started, Verdict,
        VerdictChange, VerdictState,
    },
    recorder::{FlightRecording, GcEntry, MemoryPoint},
    sites::{Frame, FrameKind},
};

const M: u64 = 1 << 20;
const EVIL: &str = "<script>alert(1)</script>";
const T0: f64 = 1_777_636_800.0;

fn snap(pid: u32, i: u64) -> Snapshot {
    Snapshot {
        ts: T0 + i as f64,
        rss_bytes: (50 + i) * M,
        committed_bytes: (60 + i) * M,
        cgroup_id: 9,
        v8_heap_limit_bytes: Some(200 * M),
        native_bytes: 10 * M,
        verdict: leak(),
        ..Snapshot::blank(pid, EVIL)
    }
}

fn leak() -> Verdict {
    Verdict {
        state: VerdictState::Leak,
        memory: Some(crate::core::verdict::MemoryKind::JsHeap),
        slope_bytes_per_s: Some(M as f64 / 60.0),
        basis: None,
        time_to_limit_s: Some(1200.0),
        limit: Some(crate::core::verdict::LimitKind::V8Heap),
        limit_bytes: Some(200 * M),
        evidence: "leak: the JS heap's floor rises 1.0 MiB/min".into(),
        site: None,
    }
}

fn gc(pid: u32, i: u64) -> Gc {
    let major = i % 5 == 4;
    Gc {
        ts: T0 + i as f64 / 2.0,
        pid,
        tid: pid,
        kind: if major { GcKind::Major } else { GcKind::Minor },
        collector: if major { "Mark-Compact" } else { "Scavenge" },
        reason: "allocation failure",
        pause_ns: 300_000 + i * 10_000,
        heap_before_bytes: (20 + i) * M,
        heap_after_bytes: (15 + i) * M,
        marking_steps: 0,
        marking_step_ns: 0,
        marking_start_ns: 0,
        cgroup_id: 9,
        container: None,
    }
}

/// A summary with a site whose JS function is named like markup.
fn summary(pid: u32) -> Record {
    let mut m = Model::new(ModelConfig {
        page_size: 4096,
        large_threshold: M,
        wall_offset_ns: 0,
        mem_hook: MemHook::BtfTracepoint,
        group_all: false,
    });
    let info = ProcessInfo { pid, comm: EVIL.into(), ts_ns: 1, ..Default::default() };
    m.apply(Input::Attach(Box::new(info)), &mut Vec::new());
    let frame = Frame {
        function: "<script>steal()</script>".into(),
        file: Some("/srv/app.js".into()),
        line: Some(3),
        kind: FrameKind::Js,
        build_id: None,
    };
    m.apply(Input::Stack { pid, id: 1, frames: vec![frame] }, &mut Vec::new());
    let op = MemOp::Mmap { addr: 0x1000_0000, len: 2 * M, prot: 3, flags: 0x22, fd: -1 };
    let kind = EventKind::Mem { op, stack: Some(1) };
    m.apply(Input::Event(Event { pid, tid: pid, ts_ns: 10, cgroup_id: 0, kind }), &mut Vec::new());
    m.summary(100)
}

fn death(pid: u32) -> Death {
    let flight = FlightRecording {
        memory: (0..7)
            .map(|i| MemoryPoint {
                ts: T0 + 30.0 + i as f64,
                rss_anon_bytes: 80 * M,
                rss_file_bytes: M,
                rss_shmem_bytes: 0,
                committed_bytes: 90 * M,
                native_bytes: 10 * M,
                js_heap_bytes: Some(40 * M),
            })
            .collect(),
        gcs: (0..3)
            .map(|i| GcEntry {
                ts: T0 + 31.0 + i as f64,
                tid: pid,
                collector: "Mark-Compact",
                reason: "last resort",
                pause_ms: 120.0,
                heap_before_bytes: 45 * M,
                heap_after_bytes: 44 * M,
            })
            .collect(),
        verdicts: Vec::new(),
        large_mappings: Vec::new(),
    };
    Death {
        ts: T0 + 37.0,
        pid,
        comm: EVIL.into(),
        cause: DeathCause::V8Oom,
        signal: Some("SIGABRT".into()),
        memory: DeathMemory {
            rss_anon_bytes: 80 * M,
            rss_file_bytes: M,
            rss_shmem_bytes: 0,
            vm_bytes: 900 * M,
            source: MemorySource::Kernel,
            js_heap_used_bytes: Some(45 * M),
            v8_heap_limit_bytes: Some(200 * M),
            v8_old_generation_limit_bytes: None,
            cgroup_usage_bytes: None,
            cgroup_limit_bytes: None,
        },
        verdict: Some(leak()),
        allocation_sites: Vec::new(),
        heap: None,
        explanation: "V8 ran out of JS heap after its floor rose".into(),
        cgroup_path: String::new(),
        cgroup_id: 9,
        container: None,
        dump_path: None,
        flight: Some(Box::new(flight)),
    }
}

/// 30 snapshots, 60 GCs (12 major), a verdict change, a death, a summary.
fn records(pid: u32) -> Vec<Record> {
    let mut r = vec![Record::Start(Started {
        ts: T0,
        schema_version: SCHEMA_VERSION,
        selection: format!("--pid {pid}"),
        follows_new_processes: false,
        processes: 1,
        mem_hook: MemHook::BtfTracepoint,
    })];
    for i in 0..30 {
        r.push(Record::Gc(gc(pid, 2 * i)));
        r.push(Record::Gc(gc(pid, 2 * i + 1)));
        r.push(Record::Snapshot(snap(pid, i)));
    }
    r.push(Record::Verdict(VerdictChange {
        ts: T0 + 20.0,
        pid: Some(pid),
        comm: Some(EVIL.into()),
        cgroup_path: String::new(),
        cgroup_id: 9,
        container: None,
        previous: VerdictState::Growing,
        verdict: leak(),
    }));
    r.push(Record::Death(death(pid)));
    r.push(summary(pid));
    r
}

fn page(pid: u32) -> String {
    let mut sink = HtmlSink::new("/nonexistent/unused.html");
    for r in records(pid) {
        sink.record(&r).unwrap();
    }
    render(sink.state())
}

/// The `data-NAME` attribute of the first chart of `class`.
fn chart_attr(page: &str, class: &str, name: &str) -> usize {
    let at =
        page.find(&format!(r#"<svg class="chart {class}""#)).unwrap_or_else(|| panic!("no {class} chart"));
    let tag = &page[at..at + page[at..].find('>').unwrap()];
    let key = format!(r#" data-{name}=""#);
    let v = &tag[tag.find(&key).unwrap_or_else(|| panic!("no {name} in {tag}")) + key.len()..];
    v[..v.find('"').unwrap()].parse().unwrap()
}

#[test]
fn every_chart_draws_every_point() {
    let p = page(4242);
    // Memory: 30 snapshots, 60 GC marks, 12 floor points.
    assert_eq!(chart_attr(&p, "memory", "snapshots"), 30);
    assert_eq!(chart_attr(&p, "memory", "gcs"), 60);
    assert_eq!(chart_attr(&p, "memory", "floor"), 12);
    assert_eq!(chart_attr(&p, "memory", "points"), 30 + 60 + 12);
    assert_eq!(p.matches(r#"<polyline class="rss" data-points="30""#).count(), 1);
    assert_eq!(p.matches(r#"<circle class="floor""#).count(), 12);
    // The floor rises 5 MiB a major GC, one every 2.5 s: 120 MiB/min.
    assert!(p.contains("floor fitted over 12 major GCs: +120.0 MiB/min, R² 1.00"), "fit line");
    // The limit (200 MiB) is under 3x the top (79 MiB): drawn.
    assert!(p.contains(r#"<line class="limit""#));
    assert_eq!(chart_attr(&p, "pauses", "gcs"), 60);
    assert_eq!(chart_attr(&p, "histogram", "total"), 60);
    // Minor GCs (circles): 48 in the memory chart, 48 in the pauses chart.
    assert_eq!(p.matches(r#"<circle class="gc gc-minor""#).count(), 96);
    // The death: 7 samples, 3 GCs.
    assert_eq!(chart_attr(&p, "flight", "samples"), 7);
    assert_eq!(chart_attr(&p, "flight", "gcs"), 3);
    assert!(p.contains("<td>last resort</td>"));
}

#[test]
fn the_verdict_its_evidence_and_time_to_limit_lead_the_process() {
    let p = page(7);
    let section = &p[p.find(r#"<section class="process" id="pid-7""#).unwrap()..];
    assert!(section.contains(r#"<div class="verdict leak"><p><b>leak (js-heap) +1.0 MiB/min</b>: leak: the JS heap&#39;s floor rises 1.0 MiB/min</p>"#), "{section}");
    assert!(section.contains("the v8-heap limit (200.0 MiB) in <b>20 min</b>"));
    assert!(section.contains("It died (v8-oom): V8 ran out of JS heap after its floor rose."));
    assert!(section.contains("<h3>Top allocation sites</h3>"));
    assert!(section.contains(r#"<div class="flame"><svg"#), "the flame graph is inline");
    assert!(section.contains("<h3>Flame graph: live bytes"));
}

#[test]
fn names_are_escaped_and_nothing_is_fetched_or_run() {
    let p = page(7);
    assert!(!p.to_ascii_lowercase().contains("<script"), "a script tag in the page");
    assert!(p.contains("&lt;script&gt;alert(1)&lt;/script&gt; (pid 7)"));
    assert!(
        p.contains("&lt;script&gt;steal()&lt;/script&gt; (app.js:3)"),
        "the JS function in the sites table"
    );
    assert!(p.contains(&format!(r#"<meta http-equiv="Content-Security-Policy" content="{}">"#, page::CSP)));
    // Only the SVG namespace names a URL.
    let urls: Vec<&str> = p.match_indices("http").map(|(i, _)| &p[i..(i + 30).min(p.len())]).collect();
    assert!(
        urls.iter().all(|u| u.starts_with("http-equiv") || u.starts_with("http://www.w3.org/2000/svg")),
        "{urls:?}"
    );
    for handler in [" onload=", " onclick=", " onmouseover=", " onmouseout="] {
        assert!(!p.contains(handler), "an event handler: {handler}");
    }
}

#[test]
fn the_report_is_written_in_one_piece_and_errors_name_the_file() {
    let dir = std::env::temp_dir().join(format!("heaptrace-html-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("report.html");
    std::fs::write(&path, "old").unwrap();
    let mut sink = HtmlSink::new(&path);
    for r in records(7) {
        sink.record(&r).unwrap();
    }
    sink.flush().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("<!DOCTYPE html>") && text.ends_with("</html>\n"));
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, [std::ffi::OsString::from("report.html")], "no temporary file left");

    let missing = dir.join("no/such/dir/report.html");
    let err = HtmlSink::new(&missing).flush().unwrap_err();
    assert!(
        err.to_string().starts_with(&format!("writing the HTML report {}: ", missing.display())),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_long_run_stays_bounded() {
    let mut sink = HtmlSink::new("/unused");
    // Ten hours of one snapshot a second and 20 GCs a second.
    for i in 0..36_000u64 {
        sink.record(&Record::Snapshot(snap(1, i))).unwrap();
        for j in 0..20 {
            let mut g = gc(1, i);
            g.ts = T0 + i as f64 + j as f64 / 20.0;
            sink.record(&Record::Gc(g)).unwrap();
        }
    }
    let p = &sink.state().processes[&1];
    assert!(p.memory.len() <= state::MAX_POINTS, "{}", p.memory.len());
    assert_eq!(p.gcs.recent.len(), state::KEPT_GCS);
    assert_eq!(p.gcs.total, 720_000);
    // The last 100 s are kept one by one: minutes 0 to 598 (part) before.
    assert_eq!(p.gcs.minutes.len(), 599);
    let page = render(sink.state());
    assert_eq!(chart_attr(&page, "histogram", "total"), 720_000);
    assert!(page.len() < 4 << 20, "{} bytes", page.len());
}

#[test]
fn a_group_has_its_chart_its_limit_and_its_processes() {
    let mut sink = HtmlSink::new("/unused");
    for i in 0..5u64 {
        let g = crate::core::record::GroupSnapshot {
            ts: T0 + i as f64,
            cgroup_path: "/system.slice/<api>.service".into(),
            cgroup_id: 9,
            container: None,
            processes: 1,
            exited_processes: 0,
            rss_bytes: (50 + i) * M,
            rss_growth_bytes: 0,
            committed_growth_bytes: 0,
            memory_usage_bytes: Some((60 + i) * M),
            memory_usage_growth_bytes: Some(0),
            memory_limit_bytes: Some(128 * M),
            memory_headroom_bytes: Some(64 * M),
            memory_source: Some(crate::core::input::CgroupVersion::V2),
            gc_count: 0,
            gc_pause_ns: 0,
            verdict: Verdict::unknown("unknown: not enough evidence yet"),
        };
        sink.record(&Record::Group(g)).unwrap();
        sink.record(&Record::Snapshot(snap(7, i))).unwrap();
    }
    let p = render(sink.state());
    assert!(p.contains("<h2>cgroup /system.slice/&lt;api&gt;.service</h2>"), "{p}");
    assert_eq!(chart_attr(&p, "group-memory", "snapshots"), 5);
    assert!(p.contains(r#"<polyline class="usage" data-points="5""#));
    assert!(p.contains("<title>cgroup limit 128.0 MiB</title>"), "the limit is drawn");
    assert!(p.contains(r##"<a href="#pid-7">&lt;script&gt;alert(1)&lt;/script&gt; (7)</a>"##), "its process");
}
