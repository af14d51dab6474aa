//! Harness for the privileged integration tests: builds the C workloads,
//! runs heaptrace and workloads as child processes, and reads heaptrace's
//! JSON Lines as they come.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{
        OnceLock,
        mpsc::{Receiver, RecvTimeoutError, channel},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub const KIB: i64 = 1024;
pub const MIB: i64 = 1024 * 1024;
/// Generous: CI machines are small and busy.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn heaptrace_bin() -> &'static str {
    env!("CARGO_BIN_EXE_heaptrace")
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Privileged tests never skip: without root they fail, saying why.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "privileged integration test: run as root (scripts/test.sh does)");
}

/// Compiles workloads/NAME.c once per test binary; returns the executable.
pub fn workload_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("workloads");
        std::fs::create_dir_all(&dir).unwrap();
        for w in ["memwork", "storm", "churn"] {
            let src = repo_root().join("workloads").join(format!("{w}.c"));
            let status = Command::new("cc")
                .args(["-O2", "-Wall", "-o"])
                .arg(dir.join(w))
                .arg(&src)
                .status()
                .expect("a C compiler (cc) is needed to build the test workloads");
            assert!(status.success(), "compiling {}", src.display());
        }
        dir
    });
    dir.join(name)
}

/// Lines from a child's stdout, delivered through a channel.
/// The lines of a child's pipe, through a channel.
pub fn line_channel(out: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A child killed (and reaped) when the test ends, panics included.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first line on `rx` that starts with `prefix`, within [`WAIT`].
pub fn expect_line_on(rx: &Receiver<String>, prefix: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.starts_with(prefix) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line starting with {prefix:?}: {e:?}"),
        }
    }
}

/// A workload driven over stdin/stdout ("ready", "run" → "done", "exit").
pub struct Workload {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Workload {
    pub fn spawn(program: &Path, args: &[&str]) -> Self {
        Self::spawn_with_env(program, args, &[])
    }

    pub fn spawn_with_env(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", program.display()));
        let lines = line_channel(child.stdout.take().unwrap());
        let stdin = child.stdin.take();
        let mut w = Self { child, stdin, lines };
        w.expect_line("ready");
        w
    }

    /// memwork with its own data file.
    pub fn memwork() -> Self {
        let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("memwork-{}.dat", rand_suffix()));
        Self::spawn(&workload_bin("memwork"), &[file.to_str().unwrap()])
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for a line starting with `prefix`; returns it.
    pub fn expect_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(line) if line.starts_with("error") => panic!("workload failed: {line}"),
                Ok(_) => {}
                Err(e) => panic!("workload {} did not print {prefix:?}: {e:?}", self.pid()),
            }
        }
    }

    /// Runs memwork's sequence and waits until it is done.
    pub fn run_sequence(&mut self) {
        self.send("run");
        self.expect_line("done");
    }

    pub fn exit(mut self) {
        self.stdin.take();
        let _ = self.child.wait();
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> String {
    format!("{}-{:?}", std::process::id(), thread::current().id()).replace(['(', ')'], "")
}

/// A running `heaptrace -o json`.
pub struct Heaptrace {
    child: Child,
    records: Receiver<String>,
    /// Every record received so far, in order.
    pub seen: Vec<Value>,
}

impl Heaptrace {
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(heaptrace_bin())
            .args(["-o", "json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning heaptrace");
        let records = line_channel(child.stdout.take().unwrap());
        Self { child, records, seen: Vec::new() }
    }

    /// Traces `pids` with a short interval; returns once each has a snapshot,
    /// so the baseline is in place before the test acts.
    pub fn attach(pids: &[u32], extra: &[&str]) -> Self {
        let mut args: Vec<String> = vec!["--interval".into(), "100ms".into()];
        for pid in pids {
            args.push("--pid".into());
            args.push(pid.to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut h = Self::start(&args);
        for &pid in pids {
            h.next_snapshot(pid);
        }
        h
    }

    /// The next record matching `pred`, waiting up to [`WAIT`].
    pub fn next_matching(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.next_matching_within(what, WAIT, pred)
    }

    /// The next record matching `pred`, waiting up to `within`.
    pub fn next_matching_within(
        &mut self,
        what: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.records.recv_timeout(left) {
                Ok(line) => {
                    let v: Value =
                        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"));
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!("no {what} from heaptrace within {within:?}"),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("heaptrace ended before a {what}; seen: {:?}", self.seen)
                }
            }
        }
    }

    pub fn next_snapshot(&mut self, pid: u32) -> Value {
        self.next_matching(&format!("snapshot of pid {pid}"), |v| v["type"] == "snapshot" && v["pid"] == pid)
    }

    /// A snapshot of `pid` that includes everything the test did before this
    /// call: the second one stamped after now. (The tick of the first may
    /// have begun, and drained the ring buffer, just before now.)
    pub fn fresh_snapshot(&mut self, pid: u32) -> Value {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let is_fresh =
            |v: &Value| v["type"] == "snapshot" && v["pid"] == pid && v["ts"].as_f64().unwrap() > now;
        self.next_matching("fresh snapshot", is_fresh);
        self.next_matching("fresh snapshot", is_fresh)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `n` records match `pred` in all (counting those seen
    /// already); returns them.
    pub fn wait_for_count(&mut self, what: &str, n: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        while self.seen.iter().filter(|v| pred(v)).count() < n {
            self.next_matching(what, &pred);
        }
        self.seen.iter().filter(|v| pred(v)).cloned().collect()
    }

    /// Sends SIGINT and collects everything up to the end.
    pub fn stop(self) -> (ExitStatus, Vec<Value>) {
        // SAFETY: kill() on our own child's pid with a valid signal number.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.finish()
    }

    /// Waits for heaptrace to end by itself and collects the rest.
    pub fn finish(mut self) -> (ExitStatus, Vec<Value>) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.records.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => self.seen.push(serde_json::from_str(&line).unwrap()),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("heaptrace did not finish within {WAIT:?}"),
            }
        }
        let status = self.child.wait().unwrap();
        (status, std::mem::take(&mut self.seen))
    }
}

impl Drop for Heaptrace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn int(v: &Value, field: &str) -> i64 {
    v[field].as_i64().unwrap_or_else(|| panic!("field {field} missing or not an integer in {v}"))
}

/// Field change between two snapshots.
pub fn delta(before: &Value, after: &Value, field: &str) -> i64 {
    int(after, field) - int(before, field)
}

pub fn summary_of(records: &[Value]) -> &Value {
    let last = records.last().expect("records");
    assert_eq!(last["type"], "summary", "the summary comes last");
    last
}

pub fn process_summary(records: &[Value], pid: u32) -> &Value {
    summary_of(records)["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pid)
        .unwrap_or_else(|| panic!("no summary for pid {pid}"))
}

/// `VmSize`, `VmRSS`, ... from /proc/PID/status, in bytes.
pub fn proc_status_bytes(pid: u32, field: &str) -> i64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap();
    let kb: i64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Known results of memwork's sequence.
pub mod memwork {
    use super::{KIB, MIB};
    pub const MAPPED: i64 = 8 * MIB - 256 * KIB + 4 * MIB + 2 * MIB + 64 * KIB;
    pub const COMMITTED: i64 = 8 * MIB - 256 * KIB + MIB + 2 * MIB + 64 * KIB;
    pub const BRK: i64 = 768 * KIB;
    pub const MAPPED_FILE: i64 = 64 * KIB;
    /// 8 x 1 MiB + the 4 MiB reservation + the 3 MiB mremap.
    pub const LARGE_MAPPINGS: usize = 10;
}

/// Where scripts/fetch-node.sh keeps the Node builds.
pub fn node_cache() -> PathBuf {
    std::env::var_os("HEAPTRACE_NODE_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/heaptrace/node")
    })
}

/// An official Node build's binary, e.g. `node_bin("22.23.3")`.
pub fn node_bin(version: &str) -> PathBuf {
    let node = node_cache().join(version).join("bin/node");
    assert!(node.exists(), "{} is missing: run scripts/fetch-node.sh", node.display());
    node
}

/// GC lines in `node --trace-gc` output (one per pause).
pub fn trace_gc_count(output: &str) -> usize {
    output
        .lines()
        .filter(|l| {
            l.starts_with('[')
                && l.split(" ms: ").nth(1).is_some_and(|r| {
                    ["Scavenge", "Minor Mark", "Mark-", "Incremental Mark"].iter().any(|k| r.starts_with(k))
                })
        })
        .count()
}

/// Records of one type.
pub fn of_type<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["type"] == kind).collect()
}

/// Checks every 20 ms until `check` holds or `within` has passed; says
/// whether it held. Never panics (guards use it while a test unwinds).
pub fn wait_until(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `check` until it returns Some, or fails after `within` saying `what`.
pub fn poll<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let mut found = None;
    let held = wait_until(within, || {
        found = check();
        found.is_some()
    });
    assert!(held, "{what}: not within {within:?}");
    found.unwrap()
}

/// A link to an official Node build under a name of its own (at most 15
/// bytes: the kernel's comm), so that `--comm` selects this test's
/// processes and no other node on the host. Returns (path, comm).
pub fn unique_node(version: &str, tag: &str) -> (PathBuf, String) {
    let comm = format!("n{tag}{}", std::process::id());
    assert!(comm.len() <= 15, "{comm}: longer than a comm");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("unique-node");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(&comm);
    let original = node_bin(version);
    // Made aside and renamed into place: the name may be a hard link to
    // another version's cached binary (a test that used the same tag), and
    // writing through it would overwrite that cache.
    let aside = dir.join(format!(".{comm}.{version}.new"));
    let _ = std::fs::remove_file(&aside);
    if std::fs::hard_link(&original, &aside).is_err() {
        std::fs::copy(&original, &aside).unwrap();
    }
    std::fs::rename(&aside, &path).unwrap();
    (path, comm)
}

/// Debian's node (unpacked under `root` by scripts/fetch-node.sh), ready for
/// its arguments: in its own mount namespace, with the builtins it loads
/// from /usr/share/nodejs overlaid on /usr/share. No change to the host, and
/// the process sees another file system, as in a container.
pub fn debian_node_command(root: &Path, node: &Path) -> Command {
    let script = format!(
        "mount -t overlay overlay -o lowerdir={share}:/usr/share /usr/share && \
         exec env LD_LIBRARY_PATH={lib} {node} \"$@\"",
        share = root.join("usr/share").display(),
        lib = root.join("usr/lib/x86_64-linux-gnu").display(),
        node = node.display(),
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "sh", "-c", &script, "sh"]);
    cmd
}

/// A registry-free container rootfs with official Node 22 as /usr/bin/node
/// and the workloads under /app (scripts/container-rootfs.sh), for podman.
pub fn container_rootfs() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rootfs-node22");
    let status = Command::new("bash")
        .arg(repo_root().join("scripts/container-rootfs.sh"))
        .arg(node_bin("22.23.3"))
        .arg(&dir)
        .status()
        .expect("running scripts/container-rootfs.sh");
    assert!(status.success(), "building the container rootfs failed");
    dir
}

/// The v2 hierarchy's mount point (`/sys/fs/cgroup/unified` on hybrid hosts).
pub fn cgroup_v2_root() -> PathBuf {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|r| r.join("cgroup.procs").exists() && r.join("cgroup.controllers").exists())
        .expect("a cgroup v2 hierarchy")
}

/// Cgroups a test makes, removed when it ends, panics included: once their
/// processes are gone (polled, not slept for), deepest first.
pub struct CgroupGuard {
    dirs: Vec<PathBuf>,
}

impl CgroupGuard {
    pub fn new() -> Self {
        Self { dirs: Vec::new() }
    }

    /// Makes `dir` and any missing parents, all removed on drop.
    pub fn make(&mut self, dir: &Path) -> PathBuf {
        let mut missing = Vec::new();
        let mut d = dir.to_path_buf();
        while !d.exists() {
            missing.push(d.clone());
            if !d.pop() {
                break;
            }
        }
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating cgroup {}: {e}", dir.display()));
        self.dirs.extend(missing);
        dir.to_path_buf()
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        self.dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in &self.dirs {
            // A killed process leaves its cgroup a moment after it is reaped.
            let procs = d.join("cgroup.procs");
            wait_until(Duration::from_secs(10), || {
                std::fs::read_to_string(&procs).is_ok_and(|p| p.trim().is_empty())
            });
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A memory cgroup limited to `limit` bytes: v2's memory.max where the
/// v2 hierarchy has the memory controller, else (hybrid hosts) a v1 memory
/// cgroup under this test's own. Returns the `cgroup.procs` to join.
pub fn memory_cgroup(guard: &mut CgroupGuard, name: &str, limit: u64) -> PathBuf {
    let v2 = cgroup_v2_root();
    let v2_memory =
        std::fs::read_to_string(v2.join("cgroup.subtree_control")).is_ok_and(|c| c.contains("memory"));
    let (dir, file) = if v2_memory {
        (guard.make(&v2.join(name)), "memory.max")
    } else {
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .unwrap()
            .lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.trim_start_matches('/').to_owned()))
            .expect("a memory cgroup, v2 or v1");
        let v1 = Path::new("/sys/fs/cgroup/memory").join(own).join(name);
        (guard.make(&v1), "memory.limit_in_bytes")
    };
    std::fs::write(dir.join(file), limit.to_string()).unwrap_or_else(|e| panic!("{file}: {e}"));
    dir.join("cgroup.procs")
}

/// The BPF programs a process holds (from its fds), by id, with names.
pub fn bpf_programs_of(pid: u32) -> Vec<(u64, String)> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if let Some(id) = text.lines().find_map(|l| l.strip_prefix("prog_id:")) {
            ids.push(id.trim().parse::<u64>().unwrap());
        }
    }
    ids.sort_unstable();
    ids.dedup();
    loaded_bpf_programs().into_iter().filter(|(id, _)| ids.contains(id)).collect()
}

/// Every BPF program loaded on the host, by id, with names (bpftool).
pub fn loaded_bpf_programs() -> Vec<(u64, String)> {
    let out =
        Command::new("bpftool").args(["-j", "prog", "show"]).output().expect("bpftool (scripts/setup.sh)");
    let all: Value = serde_json::from_slice(&out.stdout).expect("bpftool's JSON");
    all.as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_u64().unwrap(), p["name"].as_str().unwrap_or("").to_owned()))
        .collect()
}

/// Waits until none of these programs is loaded any more: the kernel frees
/// a program a moment after its last reference goes (deferred release).
/// Returns those still loaded after 5 s.
pub fn still_loaded_after_release(programs: &[(u64, String)]) -> Vec<(u64, String)> {
    let left = || {
        let loaded = loaded_bpf_programs();
        programs.iter().filter(|p| loaded.contains(p)).cloned().collect::<Vec<_>>()
    };
    wait_until(Duration::from_secs(5), || left().is_empty());
    left()
}
