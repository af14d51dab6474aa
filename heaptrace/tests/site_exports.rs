//! The allocation-site exports, read by the real consumers: the pprof
//! profile by `go tool pprof` (both sample types, the pid label), the flame
//! graph by headless Chromium (its DOM after the embedded script ran, and a
//! screenshot). Unprivileged; never skips: without `go` (Debian's
//! `golang-go`) or `chromium`, which scripts/setup.sh installs, it fails.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use heaptrace::{
    core::sites::{AllocationSite, Frame, FrameKind},
    output::{
        ProcessSites,
        flamegraph::{self, Weight},
        pprof::{self, ProfileInfo},
        write_file,
    },
};

const MIB: u64 = 1 << 20;

fn frame(function: &str, kind: FrameKind, file: Option<&str>, line: Option<u32>) -> Frame {
    Frame { function: function.into(), file: file.map(Into::into), line, kind, build_id: None }
}

/// A node process where a JS function allocated most (8 MiB, 1 MiB still
/// live) and V8's heap growth under the same request handler holds the
/// most now (2 MiB, all live; kernel, native, builtin and JS frames), next
/// to a small worker process.
fn node_sites() -> Vec<AllocationSite> {
    let node = Some("/usr/bin/node");
    let handle = frame("handleRequest", FrameKind::Js, Some("/srv/app/server.js"), Some(40));
    vec![
        AllocationSite {
            bytes: 8 * MIB,
            live_bytes: MIB,
            live_v8_bytes: 0,
            count: 64,
            frames: vec![
                frame("growBuffer", FrameKind::Js, Some("/srv/app/buffers.js"), Some(8)),
                handle.clone(),
            ],
        },
        AllocationSite {
            bytes: 2 * MIB,
            live_bytes: 2 * MIB,
            live_v8_bytes: 0,
            count: 2,
            frames: vec![
                frame("do_mmap", FrameKind::Kernel, None, None),
                frame("mmap", FrameKind::Native, Some("/usr/lib/x86_64-linux-gnu/libc.so.6"), None),
                // Characters XML must escape, through to Chromium.
                frame("std::vector<char>::_M_realloc_insert&", FrameKind::Native, node, None),
                frame("v8::internal::Heap::AllocateRaw", FrameKind::Native, node, None),
                frame("Builtins_ArrayPrototypePush", FrameKind::Builtin, node, None),
                handle,
            ],
        },
    ]
}

fn worker_sites() -> Vec<AllocationSite> {
    vec![AllocationSite {
        bytes: MIB / 2,
        live_bytes: MIB / 4,
        live_v8_bytes: 0,
        count: 1,
        frames: vec![frame("compress", FrameKind::Js, Some("/srv/app/worker.js"), Some(3))],
    }]
}

fn out_dir(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("site_exports").join(test);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a required tool; a missing one fails the test, naming the package.
fn run(program: &str, package: &str, args: &[&str]) -> Output {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {program} ({e}): install Debian's `{package}` package (scripts/setup.sh does)")
    });
    assert!(
        out.status.success(),
        "{program} {}: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Exact byte counts, not pprof's rounded "8MB" (it would also append a "B"
/// to counts, so only for byte sample types).
const BYTES: &str = "-unit=B";

/// The first row of `go tool pprof -top`: (flat, function).
fn pprof_top(file: &Path, extra: &[&str]) -> (String, String) {
    let mut args = vec!["tool", "pprof", "-top"];
    args.extend(extra);
    args.push(file.to_str().unwrap());
    let text = String::from_utf8(run("go", "golang-go", &args).stdout).unwrap();
    // The main binary (the first mapping) is node, not the first file seen.
    assert!(text.starts_with("File: node\n"), "{text}");
    let mut lines = text.lines().skip_while(|l| !l.trim_start().starts_with("flat  flat%"));
    let row = lines.nth(1).unwrap_or_else(|| panic!("no rows in pprof -top: {text}"));
    // flat flat% sum% cum cum% name (the name may hold spaces)
    let fields: Vec<&str> = row.split_whitespace().collect();
    assert!(fields.len() >= 6, "pprof -top row: {row}\n{text}");
    (fields[0].to_string(), fields[5..].join(" "))
}

#[test]
fn go_tool_pprof_reads_the_profile() {
    let (node, worker) = (node_sites(), worker_sites());
    let processes = [
        ProcessSites { pid: 4242, name: "node", sites: &node },
        ProcessSites { pid: 99, name: "worker", sites: &worker },
    ];
    let file = out_dir("pprof").join("heap.pb.gz");
    write_file(&file, &pprof::encode_gzipped(&processes, ProfileInfo::default()).unwrap()).unwrap();

    // By allocated bytes, the JS function leads; pprof names it as written.
    assert_eq!(
        pprof_top(&file, &[BYTES, "-sample_index=alloc_space"]),
        ("8388608B".into(), "growBuffer".into())
    );
    // By default pprof shows what is in use: V8's heap growth, whose leaf is
    // the kernel's mmap.
    assert_eq!(pprof_top(&file, &[BYTES]), ("2097152B".into(), "do_mmap".into()));
    assert_eq!(pprof_top(&file, &["-sample_index=alloc_objects"]), ("64".into(), "growBuffer".into()));
    // The pid label picks one process out.
    assert_eq!(
        pprof_top(&file, &[BYTES, "-sample_index=alloc_space", "-tagfocus=pid=99"]),
        ("524288B".into(), "compress".into())
    );
    // Cumulative: the request handler holds both of its sites.
    let text = String::from_utf8(
        run(
            "go",
            "golang-go",
            &[
                "tool",
                "pprof",
                "-top",
                "-cum",
                "-unit=B",
                "-sample_index=alloc_space",
                file.to_str().unwrap(),
            ],
        )
        .stdout,
    )
    .unwrap();
    let row = text.lines().find(|l| l.ends_with(" handleRequest")).unwrap_or_else(|| panic!("{text}"));
    assert_eq!(row.split_whitespace().nth(3), Some("10485760B"), "{row}");
}

/// Pixels of the screenshot by the hue a frame kind is drawn in.
#[derive(Debug, Default)]
struct Hues {
    green: usize,
    aqua: usize,
    red: usize,
    orange: usize,
    distinct: usize,
}

fn hues(png_file: &Path) -> Hues {
    let reader = std::io::BufReader::new(fs::File::open(png_file).unwrap());
    let mut decoder = png::Decoder::new(reader);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1200, 800), "the window size");
    let step = info.color_type.samples();
    let mut h = Hues::default();
    let mut seen = std::collections::HashSet::new();
    for px in buf[..info.buffer_size()].chunks_exact(step) {
        let (r, g, b) = (i32::from(px[0]), i32::from(px[1]), i32::from(px[2]));
        seen.insert((r, g, b));
        if g > r + 60 && g > b + 60 {
            h.green += 1;
        } else if g > r + 60 && b > r + 60 {
            h.aqua += 1;
        } else if r > g + 60 && r > b + 60 && b > 20 {
            h.red += 1;
        } else if r > g + 40 && b < 10 {
            h.orange += 1;
        }
    }
    h.distinct = seen.len();
    h
}

#[test]
fn chromium_renders_the_flame_graph() {
    let (node, worker) = (node_sites(), worker_sites());
    let processes = [
        ProcessSites { pid: 4242, name: "node", sites: &node },
        ProcessSites { pid: 99, name: "worker", sites: &worker },
    ];
    let dir = out_dir("flamegraph");
    let svg = dir.join("sites.svg");
    write_file(&svg, &flamegraph::render_svg(&processes, Weight::Allocated).unwrap()).unwrap();
    let url = format!("file://{}", svg.display());
    let profile = format!("--user-data-dir={}", dir.join("chromium-profile").display());
    let chromium = |extra: &[&str]| {
        let mut args = vec!["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"];
        args.push(&profile);
        args.extend(extra);
        args.push(&url);
        run("chromium", "chromium", &args)
    };

    // The DOM after the flame graph's script ran: every frame is there,
    // named, with its bytes, and the SVG parsed (no XML error page).
    let dom = String::from_utf8(chromium(&["--dump-dom"]).stdout).unwrap();
    assert!(dom.contains("heaptrace: allocated bytes by stack"), "title: {dom}");
    for title in [
        "<title>node (pid 4242) (10,485,760 bytes, 95.24%)</title>",
        "<title>growBuffer (buffers.js:8) (8,388,608 bytes, 76.19%)</title>",
        "<title>handleRequest (server.js:40) (10,485,760 bytes, 95.24%)</title>",
        "<title>std::vector&lt;char&gt;::_M_realloc_insert&amp; (2,097,152 bytes, 19.05%)</title>",
        "<title>worker (pid 99) (524,288 bytes, 4.76%)</title>",
    ] {
        assert!(dom.contains(title), "{title} missing from the rendered DOM");
    }
    assert!(!dom.contains("parsererror") && !dom.contains("error on line"), "XML error: {dom}");

    // The screenshot: drawn, not blank, with JS, builtin, native and kernel
    // hues (each frame here is over 200 by 15 pixels, text aside).
    let shot = dir.join("sites.png");
    chromium(&[&format!("--screenshot={}", shot.display()), "--window-size=1200,800"]);
    let h = hues(&shot);
    assert!(h.distinct > 20, "a near-blank screenshot: {h:?}");
    assert!(h.green > 2000 && h.aqua > 2000 && h.red > 2000 && h.orange > 2000, "frame colours: {h:?}");
}
