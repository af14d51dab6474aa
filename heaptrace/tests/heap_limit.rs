//! Privileged: V8's heap limit read from the process
//! (`V8Support::heap_size_limit`) against what the process itself prints
//! for `v8.getHeapStatistics().heap_size_limit`, on every Node build
//! scripts/fetch-node.sh provides, whatever set the limit: nothing (V8's
//! default from the machine's memory), `--max-old-space-size` on the
//! command line, the same in `NODE_OPTIONS`, and a cgroup memory limit.
//!
//! End to end: heaptrace traces the process, its GC probe delivers the
//! `Heap*` (the `this` of `Heap::CollectGarbage`), and the snapshot's
//! `v8_heap_limit_bytes` must equal the printed value.

mod support;

use std::{
    io::{BufRead, BufReader},
    os::unix::{fs::FileExt, process::CommandExt},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc::{Receiver, channel},
    thread,
};

use heaptrace::v8::{Found, LimitReader, Loader};
use support::*;

/// Prints its heap limit, then makes garbage every 5 ms so that GCs come.
const SCRIPT: &str = "const v8 = require('v8'); \
    console.log('limit ' + v8.getHeapStatistics().heap_size_limit); \
    let keep; \
    setInterval(() => { const a = []; for (let i = 0; i < 20000; i++) a.push({ i }); keep = a; }, 5);";

const CGROUP_LIMIT: u64 = 512 * 1024 * 1024;

/// One Node build: how to run it, and the file V8 is in.
struct Build {
    name: &'static str,
    node: PathBuf,
    debian_root: Option<PathBuf>,
}

fn build(name: &'static str) -> Build {
    if name == "debian-18" {
        let root = node_cache().join("debian-18");
        let node = root.join("usr/bin/node");
        assert!(node.exists(), "{} is missing: run scripts/fetch-node.sh", node.display());
        return Build { name, node, debian_root: Some(root) };
    }
    let (node, _comm) = unique_node(name, &name[..2]);
    Build { name, node, debian_root: None }
}

impl Build {
    /// node FLAGS -e SCRIPT.
    fn command(&self, flags: &[&str]) -> Command {
        let mut cmd = match &self.debian_root {
            Some(root) => debian_node_command(root, &self.node),
            None => Command::new(&self.node),
        };
        cmd.args(flags).args(["-e", SCRIPT]);
        cmd
    }
}

/// A child process, killed and reaped however the test ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn lines(out: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line from `rx` that starts with `prefix`, without it.
fn line_starting(rx: &Receiver<String>, prefix: &str, what: &str) -> String {
    poll(what, WAIT, || rx.try_iter().find_map(|l| l.strip_prefix(prefix).map(|s| s.trim().to_owned())))
}

/// Where the reader runs `Heap::MaxReserved` in the process holds that
/// function's code (through the load bias, for libnode.so): a wrong
/// address would not show in the value where the code has no rip-relative
/// operand (Node 18, 20).
fn check_address(pid: u32) -> u64 {
    let Ok(Found::V8(binary)) = Loader::default().find_in_process(pid) else { panic!("no V8 in {pid}") };
    let reader = LimitReader::new(pid, &binary).unwrap();
    let code = &binary.binary.max_reserved.as_ref().unwrap().code;
    let mut in_process = vec![0; code.len()];
    std::fs::File::open(format!("/proc/{pid}/mem"))
        .and_then(|mem| mem.read_exact_at(&mut in_process, reader.address()))
        .unwrap();
    assert_eq!(&in_process, code, "the code at {:#x} in {pid}", reader.address());
    reader.address()
}

#[derive(Clone, Copy, Debug)]
enum Case {
    Default,
    Flag,
    NodeOptions,
    Cgroup,
}

/// Runs the build in `case`; returns (printed, read).
fn measure(b: &Build, case: Case) -> (u64, u64) {
    let mut guard = CgroupGuard::new();
    let flags: &[&str] = match case {
        Case::Flag => &["--max-old-space-size=96"],
        _ => &[],
    };
    let mut cmd = b.command(flags);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).env_remove("NODE_OPTIONS");
    match case {
        Case::Default | Case::Flag => {}
        Case::NodeOptions => {
            cmd.env("NODE_OPTIONS", "--max-old-space-size=200");
        }
        Case::Cgroup => {
            let name = format!("heaptrace-limit-{}", std::process::id());
            let procs = memory_cgroup(&mut guard, &name, CGROUP_LIMIT);
            // SAFETY: the closure only writes the child's pid to a cgroup
            // file (open, write, close), which is safe between fork and exec.
            unsafe {
                cmd.pre_exec(move || std::fs::write(&procs, std::process::id().to_string()));
            }
        }
    }
    let mut node = Reaped(cmd.spawn().expect("node"));
    let pid = node.0.id();
    let out = lines(node.0.stdout.take().unwrap());
    let printed: u64 = line_starting(&out, "limit ", "node's heap_size_limit").parse().unwrap();

    let mut h = Heaptrace::attach(&[pid], &[]);
    let snapshot = h.next_matching("a snapshot with V8's heap limit", |v| {
        v["type"] == "snapshot" && v["pid"] == pid && !v["v8_heap_limit_bytes"].is_null()
    });
    let read = snapshot["v8_heap_limit_bytes"].as_u64().unwrap();
    let old = snapshot["v8_old_generation_limit_bytes"].as_u64().expect("the old generation's limit");
    let address = check_address(pid);
    println!(
        "{} {case:?}: MaxReserved at {address:#x}: printed {printed}, read {read}, old generation {old}",
        b.name
    );
    // What the flag sets, exactly; otherwise a part of the whole.
    match case {
        Case::Flag => assert_eq!(old, 96 << 20, "{} {case:?}", b.name),
        Case::NodeOptions => assert_eq!(old, 200 << 20, "{} {case:?}", b.name),
        Case::Default | Case::Cgroup => {
            assert!(old < read && old > read / 2, "{} {case:?}: {old} of {read}", b.name)
        }
    }
    drop(h);
    drop(node);
    (printed, read)
}

fn check(name: &'static str) {
    require_root();
    let b = build(name);
    let mut results = Vec::new();
    for case in [Case::Default, Case::Flag, Case::NodeOptions, Case::Cgroup] {
        let (printed, read) = measure(&b, case);
        assert_eq!(read, printed, "{name} {case:?}: read from the process vs printed by it");
        results.push(printed);
    }
    let [default, flag, node_options, cgroup] = results[..] else { unreachable!() };
    // The flags set the limit: smaller than the default, and 96 < 200.
    assert!(flag < node_options && node_options < default, "{results:?}");
    // Node 20+ (libuv 1.46 and later) sizes the heap from the cgroup's
    // limit; Node 18 (libuv 1.44.2) was measured not to (v1, hybrid host).
    if !name.contains("18") {
        assert!(cgroup < default, "{name}: the cgroup limit did not shrink the heap limit: {results:?}");
    }
}

#[test]
fn heap_limit_node_18() {
    check("18.20.8");
}

#[test]
fn heap_limit_node_20() {
    check("20.20.2");
}

#[test]
fn heap_limit_node_22() {
    check("22.23.3");
}

#[test]
fn heap_limit_node_24() {
    check("24.21.0");
}

#[test]
fn heap_limit_node_26() {
    check("26.10.0");
}

#[test]
fn heap_limit_debian_node_18_with_v8_in_libnode() {
    check("debian-18");
}
