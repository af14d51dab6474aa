//! Privileged: JS frames named from outside the process by V8's postmortem
//! metadata (`JsFrameNamer`), on every Node build scripts/fetch-node.sh
//! provides, Debian's libnode.so included.
//!
//! A node spins in uniquely named functions (one forced to baseline code,
//! one to optimized code) under a chain of functions of the shapes naming
//! must read (a class constructor, a getter, a named function expression,
//! a function with more context locals than V8 keeps inline, closures with
//! inferred names, anonymous ones). The test stops it with ptrace
//! (PTRACE_SEIZE + PTRACE_INTERRUPT), walks its frame-pointer chain as the
//! kernel does, and names the word at fp - 16 of every frame. Names and
//! lines are checked against the script's own text, and, with
//! `--perf-basic-prof`, against the perf map wherever it names a frame's
//! code.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, mpsc::channel},
    thread,
    time::{Duration, Instant},
};

use heaptrace::{
    core::sites::Frame,
    v8::{
        Found, JsFrameNamer, Loader, PerfMap, Postmortem,
        frames::ANONYMOUS,
        memory::{Memory, ProcessMemory},
    },
};
use nix::{
    sys::{
        ptrace,
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};
use support::*;

/// The functions of the script that must be named, with the text that
/// starts each one's line; `(anonymous)` is the CommonJS wrapper (line 1)
/// and the arrow given to the class.
const FUNCTIONS: [(&str, &str); 11] = [
    ("heaptraceSpinBaseline", "function heaptraceSpinBaseline("),
    ("heaptraceSpinHot", "function heaptraceSpinHot("),
    ("heaptraceRound", "function heaptraceRound("),
    ("heaptraceCapture", "  const heaptraceCapture ="),
    ("heaptraceManyLocals", "function heaptraceManyLocals("),
    ("heaptraceInnerName", "const heaptraceNamed = function heaptraceInnerName("),
    ("HeaptraceKlass", "  constructor(f) {"),
    ("get heaptraceGetter", "  get heaptraceGetter() {"),
    ("heaptraceMethod", "  heaptraceMethod() {"),
    (ANONYMOUS, "'use strict';"),
    (ANONYMOUS, "    return new HeaptraceKlass(() =>"),
];

/// Samples taken at least, for many stops at many points.
const MIN_SAMPLES: usize = 100;

/// The script: each function on a line of its own.
fn script() -> String {
    let locals: Vec<String> = (0..80).map(|i| format!("v{i} = {i}")).collect();
    let sum: Vec<String> = (0..80).map(|i| format!("v{i}")).collect();
    let spinner = |name: &str| {
        format!(
            "function {name}(ms) {{\n  const end = Date.now() + ms;\n  let n = 0;\n  \
             while (Date.now() < end) n++;\n  return n;\n}}\n"
        )
    };
    format!(
        "'use strict';\n\
         // heaptrace's js_frames test: spins in uniquely named functions.\n\
         {baseline}{hot}\
         %NeverOptimizeFunction(heaptraceSpinBaseline);\n\
         %CompileBaseline(heaptraceSpinBaseline);\n\
         %PrepareFunctionForOptimization(heaptraceSpinHot);\n\
         heaptraceSpinHot(1);\nheaptraceSpinHot(1);\n\
         %OptimizeFunctionOnNextCall(heaptraceSpinHot);\n\
         heaptraceSpinHot(1);\n\
         function heaptraceRound() {{\n  return heaptraceSpinBaseline(3) + heaptraceSpinHot(3);\n}}\n\
         function heaptraceManyLocals() {{\n  let {locals};\n\
         \x20 const heaptraceCapture = () => {sum} + heaptraceRound();\n  return heaptraceCapture();\n}}\n\
         const heaptraceNamed = function heaptraceInnerName() {{\n  return heaptraceManyLocals();\n}};\n\
         class HeaptraceKlass {{\n  constructor(f) {{\n    this.v = f();\n  }}\n}}\n\
         const heaptraceObject = {{\n  heaptraceMethod() {{\n\
         \x20   return new HeaptraceKlass(() => this.heaptraceGetter);\n  }},\n\
         \x20 get heaptraceGetter() {{\n    return heaptraceNamed();\n  }},\n}};\n\
         console.log('ready');\n\
         for (;;) heaptraceObject.heaptraceMethod();\n",
        baseline = spinner("heaptraceSpinBaseline"),
        hot = spinner("heaptraceSpinHot"),
        locals = locals.join(", "),
        sum = sum.join(" + "),
    )
}

/// Each function's name → the lines it may start on.
fn expected_lines(text: &str) -> BTreeMap<&'static str, BTreeSet<u32>> {
    let mut out: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
    for (name, start) in FUNCTIONS {
        let line = text.lines().position(|l| l.starts_with(start)).unwrap_or_else(|| panic!("{start:?}"));
        out.entry(name).or_default().insert(line as u32 + 1);
    }
    out
}

/// One Node build: how to run it.
struct Build {
    node: PathBuf,
    debian_root: Option<PathBuf>,
}

fn build(name: &'static str) -> Build {
    let b = if name == "debian-18" {
        let root = node_cache().join("debian-18");
        Build { node: root.join("usr/bin/node"), debian_root: Some(root) }
    } else {
        Build { node: node_bin(name), debian_root: None }
    };
    assert!(b.node.exists(), "{} is missing: run scripts/fetch-node.sh", b.node.display());
    b
}

impl Build {
    fn command(&self) -> Command {
        match &self.debian_root {
            Some(root) => debian_node_command(root, &self.node),
            None => Command::new(&self.node),
        }
    }
}

/// A node child, killed and reaped however the test ends (the kernel
/// detaches a dead tracee), and its perf map removed.
struct Node {
    child: Child,
    perf_map: Option<PathBuf>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(map) = &self.perf_map {
            let _ = std::fs::remove_file(map);
        }
    }
}

/// Starts node on the script, in the script's directory (some versions
/// write an `isolate-*-v8.log` there with `--perf-basic-prof`); returns
/// once it printed "ready".
fn start(b: &Build, script: &Path, perf: bool) -> Node {
    let mut cmd = b.command();
    cmd.current_dir(script.parent().unwrap());
    cmd.arg("--allow-natives-syntax");
    if perf {
        cmd.arg("--perf-basic-prof");
    }
    cmd.arg(script).env_remove("NODE_OPTIONS").stdin(Stdio::null()).stdout(Stdio::piped());
    let mut child = cmd.spawn().expect("node");
    let pid = child.id();
    let out = child.stdout.take().unwrap();
    let node = Node { child, perf_map: perf.then(|| PathBuf::from(format!("/tmp/perf-{pid}.map"))) };
    let (tx, rx) = channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    poll("node printing ready", WAIT, || rx.try_iter().any(|l| l == "ready").then_some(()));
    node
}

/// The main thread of a process, seized with ptrace: stopped and resumed
/// at will, without a signal it could see.
struct Tracee(Pid);

impl Tracee {
    fn seize(pid: u32) -> Self {
        let pid = Pid::from_raw(pid as i32);
        ptrace::seize(pid, ptrace::Options::empty()).expect("PTRACE_SEIZE");
        Tracee(pid)
    }

    /// Stops it (PTRACE_INTERRUPT); a signal that arrives first is passed on.
    fn stop(&self) {
        ptrace::interrupt(self.0).expect("PTRACE_INTERRUPT");
        loop {
            match waitpid(self.0, Some(WaitPidFlag::__WALL)).expect("waitpid") {
                WaitStatus::PtraceEvent(_, _, libc::PTRACE_EVENT_STOP) => return,
                WaitStatus::Stopped(_, signal) => ptrace::cont(self.0, signal).expect("PTRACE_CONT"),
                other => panic!("node stopped unexpectedly: {other:?}"),
            }
        }
    }

    fn resume(&self) {
        ptrace::cont(self.0, None).expect("PTRACE_CONT");
    }

    /// Lets it go (it must be stopped).
    fn detach(self) {
        ptrace::detach(self.0, None).expect("PTRACE_DETACH");
    }
}

/// One frame of a frame-pointer walk, as the kernel records it.
#[derive(Clone, Copy, Debug)]
struct Walked {
    pc: u64,
    fp: u64,
    /// The word at fp - 16.
    function_slot: u64,
}

fn word(memory: &mut ProcessMemory, addr: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    memory.read(addr, &mut b).ok().map(|_| u64::from_le_bytes(b))
}

/// Walks the frame-pointer chain from the registers: frame 0 is (rip,
/// rbp); each next one is ([fp + 8], [fp]).
fn walk(memory: &mut ProcessMemory, rip: u64, rbp: u64) -> Vec<Walked> {
    let (mut pc, mut fp) = (rip, rbp);
    let mut out = Vec::new();
    while fp != 0 && fp % 8 == 0 && out.len() < 512 {
        let function_slot = word(memory, fp - 16).unwrap_or(0);
        out.push(Walked { pc, fp, function_slot });
        let (Some(next), Some(ret)) = (word(memory, fp), word(memory, fp + 8)) else { break };
        if next <= fp {
            break;
        }
        (pc, fp) = (ret, next);
    }
    out
}

/// What a run saw.
#[derive(Default)]
struct Seen {
    samples: usize,
    /// The script's functions named, with the lines they were named with.
    named: BTreeMap<String, BTreeSet<u32>>,
    /// Frames compared with the perf map, by its tier marker.
    compared: BTreeMap<String, usize>,
    /// Every frame named from the script, innermost first, of the last sample.
    last_stack: Vec<String>,
}

/// Samples the process until every function of the script was named (and,
/// with a perf map, frames of optimized and baseline code were compared
/// with it), checking each named frame on the way.
fn sample(pid: u32, postmortem: Arc<Postmortem>, script: &Path, perf: bool) -> Seen {
    let file = script.display().to_string();
    let expected = expected_lines(&std::fs::read_to_string(script).unwrap());
    let mut namer = JsFrameNamer::new(pid, postmortem);
    let mut memory = ProcessMemory::new(pid);
    let mut perf_map = perf.then(|| PerfMap::read(pid).expect("the perf map of node --perf-basic-prof"));
    let tracee = Tracee::seize(pid);
    let mut seen = Seen::default();
    let deadline = Instant::now() + WAIT;
    let done = |seen: &Seen| {
        seen.samples >= MIN_SAMPLES
            && expected.keys().all(|name| seen.named.contains_key(*name))
            && (!perf
                || (seen.compared.keys().any(|m| optimized(m))
                    && seen.compared.keys().any(|m| m.contains('^'))))
    };
    while !done(&seen) {
        assert!(
            Instant::now() < deadline,
            "within {WAIT:?} ({} samples): named {:?}, compared with the perf map {:?}; last stack {:?}",
            seen.samples,
            seen.named,
            seen.compared,
            seen.last_stack
        );
        tracee.stop();
        let regs = ptrace::getregs(tracee.0).expect("PTRACE_GETREGS");
        let frames = walk(&mut memory, regs.rip, regs.rbp);
        if let Some(map) = perf_map.as_mut() {
            map.refresh().unwrap();
        }
        seen.samples += 1;
        seen.last_stack.clear();
        for (i, f) in frames.iter().enumerate() {
            let named = namer.name(f.function_slot);
            if let Ok(frame) = &named
                && frame.file.as_deref() == Some(file.as_str())
            {
                check_script_frame(frame, &expected, f);
                seen.named.entry(frame.function.clone()).or_default().extend(frame.line);
                seen.last_stack.push(frame.label());
            }
            // Frame 0 is left out: its pc may be in a function's code before
            // its frame is built or after it is left (the kernel's walks
            // start in libc). A return address is always in its frame's code.
            let perf_symbol = perf_map.as_ref().filter(|_| i > 0).and_then(|m| m.lookup(f.pc - 1));
            if let Some(symbol) = perf_symbol.filter(|s| s.is_js()) {
                let frame = named.unwrap_or_else(|e| {
                    panic!("frame {i} at {:#x} ({symbol:?}), fp {:#x}: not named: {e}", f.pc, f.fp)
                });
                let from_perf = symbol.frame();
                assert_eq!(
                    (&frame.function, &frame.file, frame.line),
                    (&from_perf.function, &from_perf.file, from_perf.line),
                    "frame {i} at {:#x}: metadata vs perf map {symbol:?}",
                    f.pc
                );
                *seen.compared.entry(symbol.marker.clone()).or_default() += 1;
            }
        }
        tracee.resume();
        thread::sleep(Duration::from_millis(2));
    }
    tracee.stop();
    tracee.detach();
    seen
}

/// A perf map's tier marker for optimized code: TurboFan (`*`) or Maglev
/// (`+`, which Node 26 prefers for the forced optimization).
fn optimized(marker: &str) -> bool {
    marker.contains('*') || marker.contains('+')
}

/// A frame named from the script must be one of its functions, on its line.
fn check_script_frame(frame: &Frame, expected: &BTreeMap<&str, BTreeSet<u32>>, f: &Walked) {
    let lines = expected
        .get(frame.function.as_str())
        .unwrap_or_else(|| panic!("frame at {:#x} named {frame:?}: no such function in the script", f.pc));
    let line = frame.line.unwrap_or_else(|| panic!("{frame:?}: no line"));
    assert!(lines.contains(&line), "{frame:?}: {} starts on {lines:?}", frame.function);
}

/// Times naming every frame of one stopped sample: with a fresh namer
/// (cold), then again from its cache. Returns (cold µs, cached µs, cold
/// reads, cached reads) per frame named.
fn naming_cost(pid: u32, postmortem: &Arc<Postmortem>) -> (f64, f64, f64, f64) {
    let tracee = Tracee::seize(pid);
    tracee.stop();
    let regs = ptrace::getregs(tracee.0).expect("PTRACE_GETREGS");
    let mut memory = ProcessMemory::new(pid);
    let slots: Vec<u64> = walk(&mut memory, regs.rip, regs.rbp).iter().map(|f| f.function_slot).collect();
    let mut namer = JsFrameNamer::new(pid, postmortem.clone());
    let t = Instant::now();
    let named = slots.iter().filter(|&&s| namer.name(s).is_ok()).count();
    let cold = t.elapsed();
    let cold_reads = namer.stats().reads;
    const ROUNDS: u32 = 200;
    let t = Instant::now();
    for _ in 0..ROUNDS {
        for &s in &slots {
            let _ = namer.name(s);
        }
    }
    let cached = t.elapsed() / ROUNDS;
    let cached_reads = (namer.stats().reads - cold_reads) / u64::from(ROUNDS);
    tracee.detach();
    assert!(named > 0, "no frame named in {slots:x?}");
    let per = |d: Duration| d.as_secs_f64() * 1e6 / named as f64;
    (per(cold), per(cached), cold_reads as f64 / named as f64, cached_reads as f64 / named as f64)
}

fn check(name: &'static str) {
    require_root();
    let b = build(name);
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("js-frames-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _dir = Removed(dir.clone());
    let path = dir.join("frames.js");
    std::fs::write(&path, script()).unwrap();
    for perf in [false, true] {
        let node = start(&b, &path, perf);
        let pid = node.child.id();
        let Ok(Found::V8(binary)) = Loader::default().find_in_process(pid) else { panic!("no V8 in {pid}") };
        let postmortem = binary.binary.postmortem.clone().unwrap_or_else(|| {
            panic!("{}: no postmortem metadata: {:?}", binary.display_path, binary.binary.postmortem_error)
        });
        let seen = sample(pid, postmortem.clone(), &path, perf);
        println!(
            "{name}{}: {} samples; named {:?}; compared with the perf map by tier {:?}",
            if perf { " --perf-basic-prof" } else { "" },
            seen.samples,
            seen.named,
            seen.compared
        );
        if !perf {
            let (cold, cached, cold_reads, cached_reads) = naming_cost(pid, &postmortem);
            println!(
                "{name}: naming cost per frame: cold {cold:.1} µs ({cold_reads:.1} reads), cached {cached:.2} µs \
                 ({cached_reads:.1} reads)"
            );
        }
        // Detached, it runs on.
        assert!(wait_until(Duration::from_secs(1), || std::fs::metadata(format!("/proc/{pid}")).is_ok()));
        drop(node);
    }
}

/// A directory removed however the test ends.
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn js_frames_node_18() {
    check("18.20.8");
}

#[test]
fn js_frames_node_20() {
    check("20.20.2");
}

#[test]
fn js_frames_node_22() {
    check("22.23.3");
}

#[test]
fn js_frames_node_24() {
    check("24.21.0");
}

#[test]
fn js_frames_node_26() {
    check("26.10.0");
}

#[test]
fn js_frames_debian_node_18_with_v8_in_libnode() {
    check("debian-18");
}

/// Every build's metadata parses, from the file alone; what came from
/// fallbacks is printed.
#[test]
fn postmortem_metadata_of_every_build() {
    let builds = ["18.20.8", "20.20.2", "22.23.3", "24.21.0", "26.10.0"];
    let mut files: Vec<(String, PathBuf)> = builds.iter().map(|v| (v.to_string(), node_bin(v))).collect();
    files.push(("debian-18".into(), node_cache().join("debian-18/usr/lib/x86_64-linux-gnu/libnode.so.108")));
    for (name, path) in files {
        let t = Instant::now();
        let (_, binary) = Loader::default().load(&path).unwrap();
        let load = t.elapsed();
        let p = binary.postmortem.as_ref().unwrap_or_else(|| panic!("{name}: {:?}", binary.postmortem_error));
        println!("{name}: V8 {} (binary inspected in {load:?}), fallbacks: {:?}", p.version, p.fallbacks);
        assert_eq!(p.fp_function, -16, "{name}");
        assert!(p.types.js_function.end() - p.types.js_function.start() >= 15, "{name}");
    }
}
