//! Privileged tests of `heap::inspector` against real node processes: the
//! official builds of Node 18 to 26 and Debian's node 18, each in a network
//! namespace of its own (tests/inspector/helpers.rs), and node in a podman
//! container. Opening, the DevTools calls, closing (the port refuses
//! connections, the application still serves), and every refusal, with
//! the process left as it was. Run as root; nothing is skipped.

#[path = "inspector/helpers.rs"]
mod helpers;
mod support;

use std::time::Duration;

use heaptrace::heap::inspector::{HandlerCheck, InspectorError, Refusal, Session, Source, preflight};
use helpers::*;
use support::*;

const OFFICIAL: [&str; 5] = ["18.20.8", "20.20.2", "22.23.3", "24.21.0", "26.10.0"];

/// Opens the inspector of a running HTTP server, takes a snapshot and
/// samples, closes it: the port refuses connections again, the server
/// still answers, and a second preflight finds it as it was.
fn open_snapshot_close(version: &str) {
    require_root();
    let server = script("server.js", SERVER_JS);
    let mut p = Proc::spawn(&node_path(version), &[server.to_str().unwrap()], &[]);
    let http = p.http_port();
    let pid = p.pid();
    let target = preflight(pid).unwrap_or_else(|r| panic!("node {version}: {r}"));
    assert!(!target.already_open);
    assert_eq!(target.port, 9229);
    assert_eq!(target.handler_check, HandlerCheck::NoAppHandler, "libuv's signal tree is read on {version}");
    assert!(refused(pid, 9229), "no inspector before");

    assert!(session_round(&target, true), "heaptrace opened it");
    assert!(p.stderr().contains("Debugger listening on ws://127.0.0.1:9229/"));

    assert!(refused(pid, 9229), "node {version}: the inspector's port accepts connections after close");
    assert_eq!(http_get(pid, http, "/"), "ok 50000\n", "the server answers after close");
    assert!(p.alive());
    let again = preflight(pid).unwrap();
    assert!(!again.already_open, "closed as it was found");
}

#[test]
fn opens_snapshots_and_closes_node_18() {
    open_snapshot_close("18.20.8");
}

#[test]
fn opens_snapshots_and_closes_node_20() {
    open_snapshot_close("20.20.2");
}

#[test]
fn opens_snapshots_and_closes_node_22() {
    open_snapshot_close("22.23.3");
}

#[test]
fn opens_snapshots_and_closes_node_24() {
    open_snapshot_close("24.21.0");
}

#[test]
fn opens_snapshots_and_closes_node_26() {
    open_snapshot_close("26.10.0");
}

/// The port from `--inspect-port` (here in NODE_OPTIONS), and port 0,
/// where node picks one and the session finds which.
#[test]
fn opens_on_the_port_node_is_given_or_picks() {
    require_root();
    let server = script("server.js", SERVER_JS);
    for (options, expected) in [("--inspect-port=9333", Some(9333)), ("--inspect-port=0", None)] {
        let p = Proc::spawn(&node_path("22.23.3"), &[server.to_str().unwrap()], &[("NODE_OPTIONS", options)]);
        let http = p.http_port();
        let target = preflight(p.pid()).unwrap_or_else(|r| panic!("{options}: {r}"));
        assert_eq!(target.port, expected.unwrap_or(0));
        let rt = runtime();
        let mut s = rt.block_on(Session::open(&target, Duration::from_secs(15))).unwrap();
        let port = s.address().port();
        match expected {
            Some(e) => assert_eq!(port, e),
            None => assert!(port != 0 && port != 9229, "picked {port}"),
        }
        assert!(rt.block_on(s.heap_used()).unwrap() > 0);
        rt.block_on(s.close()).unwrap();
        assert!(refused(p.pid(), port), "{options}: port {port} after close");
        assert_eq!(http_get(p.pid(), http, "/"), "ok 50000\n");
    }
}

/// Debian's node: libuv's tree cannot be read (stripped libuv.so), which
/// is remembered, not refused; the session works as on official builds.
#[test]
fn debian_node_18_opens_without_the_signal_tree() {
    require_root();
    let server = script("server.js", SERVER_JS);
    let p = Proc::debian(&[server.to_str().unwrap()], &[]);
    let http = p.http_port();
    let target = preflight(p.pid()).unwrap_or_else(|r| panic!("{r}"));
    match &target.handler_check {
        HandlerCheck::Unavailable(why) => {
            assert!(why.contains("uv__signal_tree") && why.contains("libuv"), "{why}")
        }
        other => panic!("Debian's libuv has no .symtab, yet {other:?}"),
    }
    assert!(session_round(&target, true));
    assert!(refused(p.pid(), 9229));
    assert_eq!(http_get(p.pid(), http, "/"), "ok 50000\n");
}

/// Where the tree cannot be read and the application does handle SIGUSR1,
/// no inspector comes, and the error says why it may be.
#[test]
fn debian_node_18_app_handler_is_named_when_the_inspector_does_not_come() {
    require_root();
    let server = script("server.js", SERVER_JS);
    let marker = marker("debian");
    let p = Proc::debian(&[server.to_str().unwrap()], &[("USR1_MARKER", marker.to_str().unwrap())]);
    p.http_port();
    let target = preflight(p.pid()).unwrap_or_else(|r| panic!("{r}"));
    let err = runtime().block_on(Session::open(&target, Duration::from_secs(2))).err().expect("no inspector");
    match &err {
        InspectorError::NotListening { hint, .. } => {
            assert!(hint.contains("the application may handle SIGUSR1 itself"), "{err}")
        }
        other => panic!("{other}"),
    }
    assert!(wait_until(WAIT, || marker.exists()), "the application's handler got the signal");
    let _ = std::fs::remove_file(&marker);
}

#[test]
fn refuses_a_process_that_is_not_node() {
    require_root();
    let mut p = Proc::spawn(std::path::Path::new("/bin/sleep"), &["60"], &[]);
    // Until sleep has been exec'd, the pid is unshare's or sh's.
    let pid = p.pid();
    assert!(wait_until(WAIT, || std::fs::read_link(format!("/proc/{pid}/exe"))
        .is_ok_and(|e| e.ends_with("sleep"))));
    match preflight(pid) {
        Err(r @ Refusal::NotNode { .. }) => {
            let msg = r.to_string();
            assert!(msg.contains("is not node") && msg.contains("sleep") && msg.contains("SIGUSR1"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    assert!(p.alive());
    // kthreadd: no executable at all.
    match preflight(2) {
        Err(r @ Refusal::NotNode { .. }) => assert!(r.to_string().contains("kernel thread"), "{r}"),
        other => panic!("pid 2: {other:?}"),
    }
}

#[test]
fn refuses_a_missing_process() {
    // A pid above the kernel's maximum never exists.
    match preflight(u32::MAX / 2) {
        Err(r @ Refusal::NoProcess { .. }) => assert!(r.to_string().contains("no process"), "{r}"),
        other => panic!("{other:?}"),
    }
}

/// A command line and an environment.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);

/// `--disable-sigusr1` (Node 22+): on the command line, in NODE_OPTIONS,
/// and hidden (process.title rewrote the command line): then the signal
/// masks still refuse. The process is alive afterwards.
#[test]
fn refuses_disable_sigusr1() {
    require_root();
    for version in ["22.23.3", "24.21.0", "26.10.0"] {
        let node = node_path(version);
        let cases: [Case; 3] = [
            (&["--disable-sigusr1", "-e", IDLE_JS], &[]),
            (&["-e", IDLE_JS], &[("NODE_OPTIONS", "--disable-sigusr1")]),
            (&["--disable-sigusr1", "-e", &format!("process.title = 'hidden'; {IDLE_JS}")], &[]),
        ];
        for (i, (args, env)) in cases.iter().enumerate() {
            let mut p = Proc::spawn(&node, args, env);
            p.expect("READY");
            let r =
                preflight(p.pid()).err().unwrap_or_else(|| panic!("node {version} case {i}: not refused"));
            match (i, &r) {
                (0, Refusal::DisableSigusr1 { found_in: Source::CommandLine, .. })
                | (1, Refusal::DisableSigusr1 { found_in: Source::NodeOptions, .. }) => {
                    assert!(r.to_string().contains("--disable-sigusr1"), "{r}")
                }
                (2, Refusal::NotCaught { .. }) => assert!(r.to_string().contains("--disable-sigusr1"), "{r}"),
                _ => panic!("node {version} case {i}: {r:?}"),
            }
            std::thread::sleep(Duration::from_millis(100));
            assert!(p.alive(), "node {version} case {i} died");
        }
    }
}

/// The permission model blocks SIGUSR1 (Node 20's flag, and 22+'s).
#[test]
fn refuses_the_permission_model() {
    require_root();
    for (version, flag) in [
        ("20.20.2", "--experimental-permission"),
        ("22.23.3", "--permission"),
        ("24.21.0", "--permission"),
        ("26.10.0", "--permission"),
        ("26.10.0", "--permission-audit"),
    ] {
        let mut p = Proc::spawn(&node_path(version), &[flag, "-e", IDLE_JS], &[]);
        p.expect("READY");
        match preflight(p.pid()) {
            Err(r @ Refusal::Permission { .. }) => {
                let msg = r.to_string();
                assert!(msg.contains(flag) && msg.contains("--allow-inspector"), "{msg}");
            }
            other => panic!("node {version} {flag}: {other:?}"),
        }
        assert!(p.alive());
    }
}

/// With `--allow-inspector` (Node 24+), the permission model lets it open.
#[test]
fn the_permission_model_with_allow_inspector_opens() {
    require_root();
    for version in ["24.21.0", "26.10.0"] {
        let mut p =
            Proc::spawn(&node_path(version), &["--permission", "--allow-inspector", "-e", IDLE_JS], &[]);
        p.expect("READY");
        let target = preflight(p.pid()).unwrap_or_else(|r| panic!("node {version}: {r}"));
        assert!(session_round(&target, true));
        assert!(refused(p.pid(), 9229));
        assert!(p.alive());
    }
}

/// `process.on('SIGUSR1')`: refused from libuv's tree on every official
/// build; the application's handler never runs.
#[test]
fn refuses_an_application_sigusr1_handler() {
    require_root();
    let server = script("server.js", SERVER_JS);
    for version in OFFICIAL {
        let marker = marker(version);
        let mut p = Proc::spawn(
            &node_path(version),
            &[server.to_str().unwrap()],
            &[("USR1_MARKER", marker.to_str().unwrap())],
        );
        p.http_port();
        match preflight(p.pid()) {
            Err(r @ Refusal::AppHandlesSigusr1 { watchers: 1, .. }) => {
                assert!(r.to_string().contains("process.on('SIGUSR1'"), "{r}")
            }
            other => panic!("node {version}: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(200));
        assert!(!marker.exists(), "node {version}: the application's handler ran");
        assert!(p.alive());
    }
}

/// Another process listens on 9229 in the namespace: refused, naming it.
#[test]
fn refuses_a_port_taken_by_another_process() {
    require_root();
    let server = script("server.js", SERVER_JS);
    let holder = script("holder.js", HOLDER_JS);
    let node = node_path("22.23.3");
    let before = format!("{} {} & ", node.display(), holder.display());
    let mut p = Proc::spawn_with(&node, &[server.to_str().unwrap()], &[], &before);
    p.extra = poll("the holder process", WAIT, || {
        let c = children(p.pid());
        (!c.is_empty()).then_some(c)
    });
    // Both print, in either order.
    let (mut holding, mut listening) = (false, false);
    while !(holding && listening) {
        let line = p.out.recv_timeout(WAIT).unwrap_or_else(|e| panic!("{e:?}; stderr: {}", p.stderr()));
        holding |= line.starts_with("HOLDING");
        listening |= line.starts_with("LISTENING");
    }
    let holder_pid = p.extra[0];
    match preflight(p.pid()) {
        Err(r @ Refusal::PortTaken { port: 9229, .. }) => {
            let msg = r.to_string();
            assert!(msg.contains(&format!("process {holder_pid} (node)")), "{msg}");
            assert!(msg.contains("--inspect-port"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    assert!(p.alive());
}

/// An inspector already open (`--inspect`) with a client attached is
/// refused; once the client leaves it is used and left open.
#[test]
fn refuses_an_attached_debugger_and_leaves_an_open_inspector_open() {
    require_root();
    let server = script("server.js", SERVER_JS);
    let mut p =
        Proc::spawn(&node_path("22.23.3"), &["--inspect=127.0.0.1:9229", server.to_str().unwrap()], &[]);
    p.http_port();
    let pid = p.pid();
    let debugger = attach_debugger(pid, 9229);
    match preflight(pid) {
        Err(r @ Refusal::DebuggerAttached { port: 9229, clients: 1, .. }) => {
            assert!(r.to_string().contains("debugger"), "{r}")
        }
        other => panic!("{other:?}"),
    }
    drop(debugger);
    let target = poll("the debugger's connection to go", WAIT, || preflight(pid).ok());
    assert!(target.already_open);
    assert_eq!(target.handler_check, HandlerCheck::NotNeeded);
    assert!(!session_round(&target, true), "already open: not opened by heaptrace");
    assert!(!refused(pid, 9229), "left open");
    assert!(http_get(pid, 9229, "/json/version").contains("node.js/v22"));
    assert!(p.alive());
}

/// A session dropped without `close` still closes what it opened.
#[test]
fn a_dropped_session_closes_the_inspector_it_opened() {
    require_root();
    let server = script("server.js", SERVER_JS);
    let p = Proc::spawn(&node_path("24.21.0"), &[server.to_str().unwrap()], &[]);
    let http = p.http_port();
    let target = preflight(p.pid()).unwrap();
    assert!(session_round(&target, false));
    assert!(wait_until(WAIT, || refused(p.pid(), 9229)), "the port still accepts connections");
    assert_eq!(http_get(p.pid(), http, "/"), "ok 50000\n");
}

/// Node in a podman container (a network namespace of podman's): open,
/// snapshot, close.
#[test]
fn opens_snapshots_and_closes_in_a_podman_container() {
    require_root();
    let rootfs = container_rootfs();
    let c = helpers::Container::start(&rootfs, SERVER_JS);
    let pid = c.node_pid();
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap(),
        std::fs::read_link("/proc/self/ns/net").unwrap(),
        "the container has a network namespace of its own"
    );
    let target = preflight(pid).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(target.handler_check, HandlerCheck::NoAppHandler);
    assert!(session_round(&target, true));
    assert!(refused(pid, 9229));
    assert_eq!(http_get(pid, c.http_port, "/"), "ok 50000\n");
}

/// A client that attached while heaptrace used the inspector it opened
/// (one that does not even read, the worst case): closing would drop its
/// session, and node's `inspector.close()` would hold up the event loop
/// until that client let go (seen on every official build). heaptrace
/// leaves the inspector open for it, says so, and the application keeps
/// serving.
#[test]
fn closing_leaves_the_inspector_to_a_client_that_attached_meanwhile() {
    require_root();
    let server = script("server.js", SERVER_JS);
    for version in OFFICIAL {
        let p = Proc::spawn(&node_path(version), &[server.to_str().unwrap()], &[]);
        let http = p.http_port();
        let pid = p.pid();
        let target = preflight(pid).unwrap_or_else(|r| panic!("node {version}: {r}"));
        let rt = runtime();
        let session = rt.block_on(Session::open(&target, Duration::from_secs(15))).unwrap();
        let other = attach_debugger(pid, 9229);
        match rt.block_on(session.close()) {
            Err(e @ InspectorError::OtherClients { clients: 1, .. }) => {
                assert!(e.to_string().contains("leaves the inspector open"), "{e}")
            }
            other => panic!("node {version}: {other:?}"),
        }
        let started = std::time::Instant::now();
        assert_eq!(http_get(pid, http, "/"), "ok 50000\n");
        assert!(started.elapsed() < Duration::from_secs(2), "node {version}: the event loop was held up");
        assert!(!refused(pid, 9229), "node {version}: left open for the other client");
        drop(other);
    }
}
