//! `--html`, end to end: a real leaking node process traced live with
//! `--html` (and `-o json` beside it), killed at the end so the report has
//! a death; then the page rendered by headless Chromium. Every chart in the
//! rendered DOM draws as many points as the JSON output has records (GCs,
//! snapshots, major GCs) and the death's dump has flight-recorder entries;
//! the screenshot is not blank; the console stays empty and the page makes
//! no request (Chromium's own net log, filtered to the page's requests:
//! the browser's background requests to Google are not the page's; a
//! control page shows both detectors fire). Privileged; never skips.

mod support;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use support::*;

/// Snapshots (one a second) before the workload is killed.
const SNAPSHOTS: usize = 30;

fn out_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("html-report-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// What one headless Chromium run gave: stdout (the DOM with
/// `--dump-dom`), the console's messages, and the page's own requests.
struct Rendered {
    dom: String,
    console: Vec<String>,
    requests: Vec<String>,
}

/// Renders `page` in headless Chromium with `extra` flags, logging the
/// console to stderr and the network to a net log.
fn chromium(dir: &Path, page: &Path, tag: &str, extra: &[&str]) -> Rendered {
    let netlog = dir.join(format!("{tag}-netlog.json"));
    let out = Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", dir.join(format!("{tag}-profile")).display()))
        .args(["--enable-logging=stderr", "--v=0"])
        .arg(format!("--log-net-log={}", netlog.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run chromium ({e}): install Debian's `chromium` (scripts/setup.sh does)")
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed: {stderr}");
    let console = stderr.lines().filter(|l| l.contains(":CONSOLE")).map(str::to_owned).collect();
    // The page's requests: those whose network isolation key is the file
    // origin. Chromium's own (update checks, accounts, dictionaries) have
    // none, and go on regardless of the page.
    let log: Value = serde_json::from_str(&fs::read_to_string(&netlog).unwrap()).unwrap();
    let requests = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["params"]["url"].is_string()
                && (e["params"]["initiator"] == "null"
                    || e["params"]["network_isolation_key"].as_str().is_some_and(|k| k.starts_with("file:")))
        })
        .map(|e| e["params"]["url"].as_str().unwrap().to_owned())
        .collect();
    Rendered { dom: String::from_utf8_lossy(&out.stdout).into_owned(), console, requests }
}

/// The opening tag of the first `<svg class="chart CLASS"` in `dom`, and
/// the markup up to its end.
fn chart<'a>(dom: &'a str, class: &str) -> (&'a str, &'a str) {
    let at =
        dom.find(&format!(r#"<svg class="chart {class}""#)).unwrap_or_else(|| panic!("no {class} chart"));
    let end = at + dom[at..].find("</svg>").unwrap();
    (&dom[at..at + dom[at..].find('>').unwrap()], &dom[at..end])
}

fn attr(tag: &str, name: &str) -> usize {
    let key = format!(r#" data-{name}=""#);
    let v = &tag[tag.find(&key).unwrap_or_else(|| panic!("no data-{name} in {tag}")) + key.len()..];
    v[..v.find('"').unwrap()].parse().unwrap()
}

#[test]
fn the_html_report_of_a_leaking_node_renders_every_point_offline() {
    require_root();
    let dir = out_dir();
    let report = dir.join("report.html");
    let dumps = dir.join("dumps");

    let mut node = ChildGuard(
        Command::new(node_bin("22.23.3"))
            .arg(repo_root().join("workloads/diagnosis/unbounded-array.js"))
            .envs([("TICK_MS", "25"), ("ARRAY_LEN", "10000")])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lines = line_channel(node.0.stdout.take().unwrap());
    expect_line_on(&lines, "ready ");
    let pid = node.0.id();
    let mut h = Heaptrace::start(&[
        "--pid",
        &pid.to_string(),
        "--interval",
        "1s",
        "--dump-dir",
        dumps.to_str().unwrap(),
        "--html",
        report.to_str().unwrap(),
    ]);
    let is_snapshot = |v: &Value| v["type"] == "snapshot" && v["pid"] == pid;
    while h.seen.iter().filter(|v| is_snapshot(v)).count() < SNAPSHOTS {
        h.next_matching_within("snapshot", Duration::from_secs(10), is_snapshot);
    }
    // SAFETY: kill() on our own child's pid with a valid signal number.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    // Its only process gone, heaptrace ends by itself: death, summary, report.
    let (status, records) = h.finish();
    assert!(status.success(), "{status}");
    drop(node);

    let of_pid = |kind: &str| -> Vec<&Value> {
        of_type(&records, kind).into_iter().filter(|v| v["pid"] == pid).collect()
    };
    let gcs = of_pid("gc");
    let majors = gcs.iter().filter(|g| g["kind"] == "major").count();
    let snapshots = of_pid("snapshot").len();
    let deaths = of_pid("death");
    assert_eq!(deaths.len(), 1, "one death");
    assert!(gcs.len() > 20 && majors >= 4, "a leaking node collects: {} GCs, {majors} major", gcs.len());
    let dump: Value =
        serde_json::from_str(&fs::read_to_string(deaths[0]["dump_path"].as_str().unwrap()).unwrap()).unwrap();
    let flight_samples = dump["flight_recorder"]["memory"].as_array().unwrap().len();
    let flight_gcs = dump["flight_recorder"]["gcs"].as_array().unwrap().len();
    assert!(flight_samples >= SNAPSHOTS - 2 && flight_gcs > 0, "{flight_samples} samples, {flight_gcs} GCs");

    eprintln!(
        "html_report: {snapshots} snapshots, {} GCs ({majors} major), death with {flight_samples} samples and {flight_gcs} GCs; report {} bytes",
        gcs.len(),
        fs::metadata(&report).unwrap().len()
    );

    // The file itself: no script, a CSP that forbids fetching, and no URL
    // but the SVG namespace.
    let html = fs::read_to_string(&report).unwrap();
    assert!(!html.to_ascii_lowercase().contains("<script"), "a script in the page");
    assert!(html.contains(
        r#"<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">"#
    ));
    for (at, _) in html.match_indices("http") {
        let rest = &html[at..];
        assert!(
            rest.starts_with("http-equiv") || rest.starts_with("http://www.w3.org/2000/svg\""),
            "a URL in the page: {}",
            &rest[..rest.len().min(80)]
        );
    }

    // The rendered DOM: each chart draws as many points as the records say.
    let page = chromium(&dir, &report, "report", &["--dump-dom"]);
    let dom = &page.dom;
    assert!(dom.contains(&format!(r#"<section class="process" id="pid-{pid}""#)), "the process's section");
    assert!(dom.contains(r#"<div class="verdict "#), "a verdict block");
    let (tag, body) = chart(dom, "memory");
    assert_eq!(attr(tag, "snapshots"), snapshots);
    assert_eq!(attr(tag, "gcs"), gcs.len(), "every GC of the JSON output is drawn");
    assert_eq!(attr(tag, "floor"), majors);
    assert_eq!(attr(tag, "points"), snapshots + gcs.len() + majors);
    assert_eq!(body.matches(r#"<circle class="gc gc-"#).count(), gcs.len(), "GC marks in the DOM");
    assert_eq!(body.matches(r#"<circle class="floor""#).count(), majors, "floor points in the DOM");
    assert!(body.contains(&format!(r#"<polyline class="rss" data-points="{snapshots}""#)), "RSS line");
    assert!(body.contains(r#"<line class="floor-fit""#), "the floor's fitted line");
    let (tag, body) = chart(dom, "pauses");
    assert_eq!(attr(tag, "gcs"), gcs.len());
    assert_eq!(body.matches(r#"<circle class="gc gc-"#).count(), gcs.len());
    let (tag, body) = chart(dom, "histogram");
    assert_eq!(attr(tag, "total"), gcs.len(), "every GC in a bucket");
    let in_bars: usize = body
        .split(r#"data-count=""#)
        .skip(1)
        .map(|s| s[..s.find('"').unwrap()].parse::<usize>().unwrap())
        .sum();
    assert_eq!(in_bars, gcs.len());
    let (tag, body) = chart(dom, "flight");
    assert_eq!(attr(tag, "samples"), flight_samples, "the death's samples");
    assert_eq!(attr(tag, "gcs"), flight_gcs, "the death's GCs");
    assert_eq!(body.matches(r#"<circle class="gc gc-"#).count(), flight_gcs);
    assert!(dom.contains(r#"<div class="flame"><svg"#), "the flame graph, inline");
    assert!(dom.contains("<h3>Top allocation sites</h3>"));
    assert!(page.console.is_empty(), "console messages: {:?}", page.console);
    assert!(page.requests.is_empty(), "the page made requests: {:?}", page.requests);

    // The screenshot is drawn, not blank.
    let shot = dir.join("report.png");
    let page = chromium(
        &dir,
        &report,
        "shot",
        &[&format!("--screenshot={}", shot.display()), "--window-size=1000,2000"],
    );
    assert!(page.console.is_empty(), "console messages: {:?}", page.console);
    let (distinct, inked) = colours(&shot);
    assert!(
        distinct > 50 && inked > 5.0,
        "a near-blank screenshot: {distinct} colours, {inked:.1} % not white"
    );

    // The detectors themselves: a page with an inline script (refused by
    // the same CSP) and one that loads an image do show up.
    let control = dir.join("control.html");
    fs::write(
        &control,
        r#"<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="img-src http:; script-src 'none'"></head><body><script>1</script><img src="http://127.0.0.1:9/x.png"></body></html>"#,
    )
    .unwrap();
    let control = chromium(&dir, &control, "control", &["--dump-dom"]);
    assert!(!control.console.is_empty(), "the console detector saw nothing");
    assert_eq!(control.requests, ["http://127.0.0.1:9/x.png"], "the request detector");
    fs::remove_dir_all(&dir).unwrap();
}

/// Distinct colours in a PNG, and the share of its pixels that are not
/// near-white, in percent.
fn colours(png_file: &Path) -> (usize, f64) {
    let reader = std::io::BufReader::new(fs::File::open(png_file).unwrap());
    let mut decoder = png::Decoder::new(reader);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    let mut seen = std::collections::HashSet::new();
    let (mut inked, mut all) = (0usize, 0usize);
    for px in buf[..info.buffer_size()].chunks_exact(step) {
        seen.insert((px[0], px[1], px[2]));
        all += 1;
        if px[..3].iter().any(|&c| c < 230) {
            inked += 1;
        }
    }
    (seen.len(), 100.0 * inked as f64 / all.max(1) as f64)
}
