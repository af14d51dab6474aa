//! Privileged death tests: a traced Node process killed by a signal, or
//! aborted by V8 for lack of heap, gets a `death` record whose memory was
//! read in the kernel at that moment, checked against /proc read just before;
//! a normal exit gets none. Run as root; they never skip.

mod support;

use std::path::Path;

use serde_json::Value;
use support::*;

const NODE: &str = "22.23.3";

/// Node (under a comm of its own) with core dumps off, so that a fatal
/// SIGSEGV ends it at once, whatever the host's core settings; `exec` keeps
/// the pid. Prints "ready" when `script` says so.
fn spawn_node(node: &Path, script: &str, extra: &[&str]) -> Workload {
    let mut args = vec!["-c", "ulimit -c 0; exec \"$0\" \"$@\"", node.to_str().unwrap()];
    args.extend(extra);
    args.extend(["-e", script]);
    Workload::spawn(Path::new("/bin/sh"), &args)
}

/// 96 MiB of anonymous memory, touched (filled with ones), then idle.
const HOLD_MEMORY: &str = "globalThis.held = Buffer.alloc(96 << 20, 1); \
     setInterval(() => {}, 1000); console.log('ready');";

/// RssAnon of `pid` once two readings in a row agree (the process is idle).
fn idle_rss_anon(pid: u32) -> i64 {
    let mut last = -1;
    poll("a steady RssAnon", WAIT, || {
        let now = proc_status_bytes(pid, "RssAnon");
        let steady = now == last;
        last = now;
        steady.then_some(now)
    })
}

fn death_of(h: &mut Heaptrace, pid: u32) -> Value {
    h.next_matching(&format!("death of {pid}"), |v| v["type"] == "death" && v["pid"] == pid)
}

/// Kills an idle traced node with `signal` and checks its death record.
fn killed_by(signal: i32, name: &str, tag: &str) {
    require_root();
    let (node, comm) = unique_node(NODE, tag);
    let w = spawn_node(&node, HOLD_MEMORY, &[]);
    let pid = w.pid();
    let mut h = Heaptrace::attach(&[pid], &[]);
    let before = idle_rss_anon(pid);
    // SAFETY: kill() on our own child's pid with a valid signal number.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
    let death = death_of(&mut h, pid);
    let exit = h.next_matching("exit", |v| v["type"] == "exit" && v["pid"] == pid);
    drop(w);

    assert_eq!(death["comm"], comm.as_str());
    assert_eq!(death["cause"], "signal", "{death}");
    assert_eq!(death["signal"], name, "{death}");
    let memory = &death["memory"];
    assert_eq!(memory["source"], "kernel", "{death}");
    let at_death = int(memory, "rss_anon_bytes");
    let tolerance = (before / 20).max(MIB);
    eprintln!(
        "{name}: RssAnon before {before} B, at death (kernel) {at_death} B, difference {} B",
        at_death - before
    );
    assert!(
        (at_death - before).abs() <= tolerance,
        "{name}: rss_anon at death {at_death} vs /proc before {before} (tolerance {tolerance})"
    );
    assert!(before >= 96 * MIB, "the buffer is resident: {before}");
    // total_vm covers the resident memory.
    assert!(int(memory, "vm_bytes") > at_death, "{death}");
    assert!(death["ts"].as_f64().unwrap() <= exit["ts"].as_f64().unwrap());
}

#[test]
fn sigkill_is_a_death_with_the_memory_at_that_moment() {
    killed_by(libc::SIGKILL, "SIGKILL", "dk");
}

#[test]
fn sigsegv_is_a_death_with_the_memory_at_that_moment() {
    killed_by(libc::SIGSEGV, "SIGSEGV", "ds");
}

#[test]
fn sigterm_without_a_handler_of_its_own_is_a_death() {
    // Node resets SIGTERM to the default action and raises it again: the
    // kernel turns it into a group exit with SIGKILL for every thread.
    killed_by(libc::SIGTERM, "SIGTERM", "dt");
}

#[test]
fn v8_out_of_heap_is_a_death_with_the_kernels_memory() {
    require_root();
    let (node, comm) = unique_node(NODE, "do");
    let leak = "process.stdin.once('data', () => { const a = []; \
                setInterval(() => { for (let i = 0; i < 1000; i++) a.push({ s: 'x'.repeat(100) + i }); }, 1); }); \
                console.log('ready');";
    let mut w = spawn_node(&node, leak, &["--max-old-space-size=32"]);
    let pid = w.pid();
    let mut h = Heaptrace::attach(&[pid], &[]);
    w.send("go");
    let oom = h.next_matching("oom", |v| v["type"] == "oom" && v["pid"] == pid);
    let death = death_of(&mut h, pid);
    drop(w);

    assert_eq!(death["comm"], comm.as_str());
    assert_eq!(death["cause"], "v8-oom", "{death}");
    assert_eq!(oom["source"], "v8", "{oom}");
    let memory = &death["memory"];
    assert_eq!(memory["source"], "kernel", "{death}");
    let rss_anon = int(memory, "rss_anon_bytes");
    let heap_used = int(memory, "js_heap_used_bytes");
    eprintln!(
        "v8-oom: rss_anon at death {rss_anon} B, JS heap used {heap_used} B, vm {} B",
        int(memory, "vm_bytes")
    );
    // The JS heap lives in anonymous memory; near a 32 MiB old space it is
    // tens of MiB.
    assert!(heap_used >= 16 * MIB, "{death}");
    assert!(rss_anon >= heap_used, "{death}");
    assert_eq!(int(&oom, "anon_rss_bytes"), rss_anon, "the oom record has the kernel's reading: {oom}");
    assert_eq!(int(&oom, "vm_bytes"), int(memory, "vm_bytes"));
}

#[test]
fn a_normal_exit_is_not_a_death() {
    require_root();
    let (node, _comm) = unique_node(NODE, "dx");
    let script = "process.stdin.once('data', () => process.exit(3)); console.log('ready');";
    let mut w = spawn_node(&node, script, &[]);
    let pid = w.pid();
    let mut h = Heaptrace::attach(&[pid], &[]);
    w.send("go");
    let status = w.child.wait().unwrap();
    assert_eq!(status.code(), Some(3));
    h.next_matching("exit", |v| v["type"] == "exit" && v["pid"] == pid);
    let (_, records) = h.stop();
    assert!(
        !records.iter().any(|v| v["type"] == "death"),
        "process.exit(3) is no death: {:?}",
        of_type(&records, "death")
    );
}
