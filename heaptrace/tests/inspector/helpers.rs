//! Node processes for the inspector tests, each in a network namespace of
//! its own (`unshare -n`, loopback up): the inspector's port 9229 is then
//! the test's alone, whatever the host or a parallel test listens on, and
//! every connection goes through heaptrace's namespace switch as it would
//! for a container.

use std::{
    fs::File,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc::Receiver,
    thread,
    time::{Duration, Instant},
};

use heaptrace::heap::inspector::{InspectorError, Session, Target};
use nix::sched::{CloneFlags, setns};

use crate::support::*;

/// The test server: a heap worth a snapshot, an HTTP server on a port of
/// its own choosing, a SIGHUP handler, and (with `USR1_MARKER` set) an application handler
/// for SIGUSR1 that leaves a marker file when it runs.
pub const SERVER_JS: &str = r#"
const http = require('http');
const keep = [];
for (let i = 0; i < 50000; i++) keep.push({ i, s: 'item ' + i });
// A watcher for another signal: libuv's tree is never empty.
process.on('SIGHUP', () => {});
if (process.env.USR1_MARKER) {
  process.on('SIGUSR1', () => require('fs').writeFileSync(process.env.USR1_MARKER, 'handler ran\n'));
}
const srv = http.createServer((req, res) => res.end('ok ' + keep.length + '\n'));
srv.listen(0, '127.0.0.1', () => console.log('LISTENING ' + srv.address().port));
"#;

/// A listener on the inspector's port, as another program in the same
/// namespace would have it; it ends when its parent does.
pub const HOLDER_JS: &str = r#"
const ppid = process.ppid;
require('net').createServer().listen(9229, '127.0.0.1', () => console.log('HOLDING'));
setInterval(() => { if (process.ppid !== ppid) process.exit(0); }, 100);
"#;

/// An idle program for `-e`: nothing to read from disk (the permission
/// model needs no --allow-fs-read for it).
pub const IDLE_JS: &str = "const keep = []; for (let i = 0; i < 50000; i++) keep.push({ i }); \
                           setInterval(() => {}, 1000); console.log('READY');";

pub fn tmp_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("inspector");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a script under the test's tmp dir; returns its path.
pub fn script(name: &str, body: &str) -> PathBuf {
    let path = tmp_dir().join(name);
    std::fs::write(&path, body).unwrap();
    path
}

/// A path unique to this test process and `tag`, removed first.
pub fn marker(tag: &str) -> PathBuf {
    let path = tmp_dir().join(format!("marker-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Official build `version` (e.g. "22.23.3"), or Debian's ("debian-18").
pub fn node_path(version: &str) -> PathBuf {
    if version == "debian-18" {
        let node = node_cache().join("debian-18/usr/bin/node");
        assert!(node.exists(), "{} is missing: run scripts/fetch-node.sh", node.display());
        node
    } else {
        node_bin(version)
    }
}

/// A node (or other) process in a network namespace of its own, killed
/// and reaped when the test ends, panics included.
pub struct Proc {
    pub guard: ChildGuard,
    pub out: Receiver<String>,
    pub err: Receiver<String>,
    /// Processes it started (killed too).
    pub extra: Vec<u32>,
}

impl Proc {
    /// `program args` in a new network namespace with loopback up; the
    /// shell execs the program, so the child's pid is the program's.
    pub fn spawn(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
        Self::spawn_with(program, args, env, "")
    }

    /// As [`Proc::spawn`], with `before` run by the shell first (in the
    /// same namespace).
    pub fn spawn_with(program: &Path, args: &[&str], env: &[(&str, &str)], before: &str) -> Proc {
        let script = format!("ip link set lo up && {before} exec \"$0\" \"$@\"");
        let mut cmd = Command::new("unshare");
        cmd.args(["-n", "sh", "-c", &script]).arg(program).args(args);
        Self::start(cmd, env)
    }

    /// Debian's node 18 (V8 in libnode, libuv a stripped shared library),
    /// with its builtins overlaid in a mount namespace, as in tests/gc.rs;
    /// in a network namespace of its own too.
    pub fn debian(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let root = node_cache().join("debian-18");
        let script = format!(
            "ip link set lo up && mount -t overlay overlay -o lowerdir={share}:/usr/share /usr/share && \
             exec env LD_LIBRARY_PATH={lib} {node} \"$@\"",
            share = root.join("usr/share").display(),
            lib = root.join("usr/lib/x86_64-linux-gnu").display(),
            node = node_path("debian-18").display(),
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "-n", "sh", "-c", &script, "sh"]).args(args);
        Self::start(cmd, env)
    }

    fn start(mut cmd: Command, env: &[(&str, &str)]) -> Proc {
        cmd.envs(env.iter().copied()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("unshare (util-linux) and ip (iproute2)");
        let out = line_channel(child.stdout.take().unwrap());
        let err = line_channel(child.stderr.take().unwrap());
        Proc { guard: ChildGuard(child), out, err, extra: Vec::new() }
    }

    pub fn pid(&self) -> u32 {
        self.guard.0.id()
    }

    /// Waits for a line starting with `prefix` on stdout; returns the rest.
    pub fn expect(&self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.out.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.starts_with(prefix) => return line[prefix.len()..].trim().to_owned(),
                Ok(_) => {}
                Err(e) => panic!(
                    "process {} did not print {prefix:?} ({e:?}); stderr: {}",
                    self.pid(),
                    self.stderr()
                ),
            }
        }
    }

    /// The HTTP port of [`SERVER_JS`].
    pub fn http_port(&self) -> u16 {
        self.expect("LISTENING").parse().unwrap()
    }

    /// Whatever it has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.err.try_iter().collect::<Vec<_>>().join("\n")
    }

    pub fn alive(&mut self) -> bool {
        self.guard.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        for &pid in &self.extra {
            // SAFETY: kill() with a pid this test started and a valid signal.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// The children of `pid` (its main thread's, which is where `sh`'s exec
/// leaves them).
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Runs `f` on a thread inside `pid`'s network namespace.
pub fn in_netns<T: Send + 'static>(pid: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
    thread::spawn(move || {
        let ns = File::open(format!("/proc/{pid}/ns/net")).expect("the process's network namespace");
        setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("the namespace thread")
}

/// `GET path` from inside `pid`'s namespace: the body, read to its
/// Content-Length (node's inspector keeps the connection open) or to the
/// end.
pub fn http_get(pid: u32, port: u16, path: &str) -> String {
    let path = path.to_owned();
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    in_netns(pid, move || {
        let mut s =
            TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connecting to {port}: {e}"));
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&data).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok()).flatten()
                });
                if length.is_some_and(|n| body.len() >= n) {
                    return body.to_owned();
                }
            }
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => data.extend_from_slice(&buf[..n]),
                Err(e) => panic!("reading {path} from {port}: {e}; got {:?}", String::from_utf8_lossy(&data)),
            }
        }
        let text = String::from_utf8_lossy(&data).into_owned();
        text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or(text)
    })
}

/// Whether a connection to 127.0.0.1:`port` in `pid`'s namespace is
/// refused.
pub fn refused(pid: u32, port: u16) -> bool {
    in_netns(
        pid,
        move || matches!(TcpStream::connect(("127.0.0.1", port)), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
    )
}

/// A DevTools client of our own (a debugger stand-in), connected inside
/// `pid`'s namespace to the inspector on `port`, kept while it lives.
pub fn attach_debugger(pid: u32, port: u16) -> tokio_tungstenite::tungstenite::WebSocket<TcpStream> {
    let list = http_get(pid, port, "/json/list");
    let list: serde_json::Value =
        serde_json::from_str(&list).unwrap_or_else(|e| panic!("/json/list {list:?}: {e}"));
    let url = list[0]["webSocketDebuggerUrl"].as_str().expect("a webSocketDebuggerUrl").to_owned();
    in_netns(pid, move || {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (ws, _) =
            tokio_tungstenite::tungstenite::client(url.as_str(), stream).expect("WebSocket handshake");
        ws
    })
}

/// A current-thread runtime, as heaptrace uses.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Opens a session on `target`, checks the heap calls and (if `close`)
/// closes it; returns whether heaptrace opened the inspector.
pub fn session_round(target: &Target, close: bool) -> bool {
    runtime().block_on(async {
        let mut s =
            Session::open(target, Duration::from_secs(15)).await.unwrap_or_else(|e| panic!("open: {e}"));
        let used = s.heap_used().await.unwrap();
        assert!(used > 1 << 20, "usedSize {used}");
        let usage = s.call("Runtime.getHeapUsage", serde_json::json!({})).await.unwrap();
        assert!(usage["usedSize"].as_f64().unwrap() > 0.0 && usage["totalSize"].as_f64().unwrap() > 0.0);
        let snapshot = s.take_snapshot().await.unwrap();
        assert!(snapshot.starts_with(br#"{"snapshot":"#), "{:?}", String::from_utf8_lossy(&snapshot[..64]));
        assert!(snapshot.len() > 100 * 1024, "snapshot of {} bytes", snapshot.len());
        let parsed: serde_json::Value =
            serde_json::from_slice(&snapshot).expect("the snapshot is whole JSON");
        assert!(parsed["nodes"].as_array().is_some_and(|n| !n.is_empty()));
        s.start_sampling(4096).await.unwrap();
        let profile = s.stop_sampling().await.unwrap();
        assert!(profile["head"]["callFrame"].is_object() && profile["samples"].is_array(), "{profile}");
        match s.call("No.suchMethod", serde_json::json!({})).await {
            Err(InspectorError::Protocol { message, .. }) => {
                assert!(message.contains("No.suchMethod"), "{message}")
            }
            other => panic!("an unknown method: {other:?}"),
        }
        let opened = s.opened();
        if close {
            s.close().await.unwrap_or_else(|e| panic!("close: {e}"));
        }
        opened
    })
}

/// `node -e SCRIPT` in a podman container (runc, a local rootfs, no
/// network but its own loopback), removed when the test ends.
pub struct Container {
    child: ChildGuard,
    pub id: String,
    pub http_port: u16,
}

impl Container {
    pub fn start(rootfs: &Path, script: &str) -> Container {
        let cidfile = tmp_dir().join(format!("cid-{}", std::process::id()));
        let _ = std::fs::remove_file(&cidfile); // podman refuses an existing one
        let mut child = Command::new("podman")
            .args(["--runtime", "/usr/sbin/runc", "--cgroup-manager", "cgroupfs", "run", "--rm"])
            .args(["--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"])
            .arg("--cidfile")
            .arg(&cidfile)
            .arg("--rootfs")
            .arg(rootfs)
            .args(["/usr/bin/node", "-e", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("podman (scripts/setup.sh installs it)");
        let out = line_channel(child.stdout.take().unwrap());
        let child = ChildGuard(child);
        let port = expect_line_on(&out, "LISTENING");
        let id = std::fs::read_to_string(&cidfile).expect("podman's cidfile").trim().to_owned();
        let _ = std::fs::remove_file(&cidfile);
        let http_port = port["LISTENING".len()..].trim().parse().unwrap();
        Container { child, id, http_port }
    }

    /// The container's node, as the host sees it.
    pub fn node_pid(&self) -> u32 {
        let out = Command::new("podman")
            .args(["inspect", "--format", "{{.State.Pid}}", &self.id])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("podman inspect: {e}: {out:?}"))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.child.0.try_wait().ok().flatten().is_none() {
            let _ = Command::new("podman").args(["rm", "-f", "-t", "0", &self.id]).output();
        }
    }
}
