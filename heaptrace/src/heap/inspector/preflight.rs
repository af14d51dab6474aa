//! Every check made before anything is sent to the process, from /proc and
//! its memory; each refusal says what was found, why heaptrace stops, and
//! what the user can do.

use std::{
    net::IpAddr,
    os::fd::{FromRawFd, OwnedFd},
    sync::Arc,
};

use thiserror::Error;

use super::{
    HandlerCheck, Target,
    flags::{NodeFlags, node_options},
    netns::{self, LISTEN},
    signals::{Masks, SIGUSR1, watchers_for},
};
use crate::v8::{Found, Loader, ProcessBinary, memory::ProcessMemory};

/// Why heaptrace will not open (or use) a process's inspector.
#[derive(Debug, Error)]
pub enum Refusal {
    /// No process has this pid (or it has exited).
    #[error("no process {pid}: {reason}; check the pid (e.g. `ps -p {pid}`)")]
    NoProcess { pid: u32, reason: String },
    /// /proc or the process's memory could not be read.
    #[error(
        "cannot examine process {pid}: {reason}; run heaptrace as root (it reads /proc/{pid} and the process's memory)"
    )]
    Unreadable { pid: u32, reason: String },
    /// Neither its executable nor a mapped libnode is a node build.
    #[error(
        "process {pid} ({exe}) is not node: {why}; heaptrace heap sends SIGUSR1 only to node, which opens its inspector on it (for other programs the signal is usually fatal); check the pid: for node under a wrapper (npm, a shell, a process manager) give node's own (e.g. from `pgrep -a node`)"
    )]
    NotNode { pid: u32, exe: String, why: String },
    /// Started with `--disable-sigusr1`.
    #[error(
        "node process {pid} was started with --disable-sigusr1 (in {found_in}): node blocks SIGUSR1 and will not open its inspector on it; restart it without that flag, or with --inspect (heaptrace then uses the open inspector)"
    )]
    DisableSigusr1 { pid: u32, found_in: super::flags::Source },
    /// Under the permission model without `--allow-inspector`.
    #[error(
        "node process {pid} runs under the permission model ({flag} in {found_in}) without --allow-inspector: node then blocks SIGUSR1 and keeps its inspector closed; restart it with --allow-inspector (Node 24 and later) to allow heaptrace heap"
    )]
    Permission { pid: u32, flag: String, found_in: super::flags::Source },
    /// No handler for SIGUSR1: its default action would terminate it.
    #[error(
        "process {pid} has no handler for SIGUSR1 (its SigCgt bit is clear in /proc/{pid}/status), so the signal would terminate it; {hint}"
    )]
    NotCaught { pid: u32, hint: &'static str },
    /// SIGUSR1 is ignored.
    #[error(
        "process {pid} ignores SIGUSR1 (SigIgn in /proc/{pid}/status): its inspector cannot be opened with it; start node with --inspect instead"
    )]
    Ignored { pid: u32 },
    /// The main thread blocks SIGUSR1.
    #[error(
        "process {pid}'s main thread blocks SIGUSR1 (SigBlk in /proc/{pid}/status): the signal would stay pending and could open the inspector later, when nobody is there to close it; start node with --inspect instead"
    )]
    Blocked { pid: u32 },
    /// The application handles SIGUSR1 itself.
    #[error(
        "the application in process {pid} handles SIGUSR1 itself ({watchers} libuv signal watcher(s), e.g. process.on('SIGUSR1', ...)): libuv's handler has replaced node's, so the signal would run the application's handler and not open the inspector; remove that handler, or start node with --inspect"
    )]
    AppHandlesSigusr1 { pid: u32, watchers: usize },
    /// Clients are connected to the already open inspector.
    #[error(
        "node process {pid}'s inspector on port {port} is open with {clients} client connection(s) (a debugger in use?): heaptrace does not share or take over someone else's session; disconnect the debugger and try again"
    )]
    DebuggerAttached { pid: u32, port: u16, clients: usize },
    /// Another process listens on the inspector's port in the namespace.
    #[error(
        "port {port} is already listened on in process {pid}'s network namespace by {holder}: node could not open its inspector there; stop that listener, or restart node with --inspect-port=<a free port>"
    )]
    PortTaken { pid: u32, port: u16, holder: String },
}

/// pidfd_open(2): the process as a handle, so that the signal sent later
/// reaches this process and never a new one that reused the pid.
fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
    // no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the fd was just returned to us by the kernel and is owned by
    // nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// pidfd_send_signal(2).
pub(super) fn pidfd_signal(fd: &OwnedFd, signal: i32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid pidfd, a signal number, no siginfo (null) and no
    // flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

/// Reads a /proc file of `pid`, telling a gone process from an unreadable
/// file.
fn read_proc(pid: u32, name: &str) -> Result<Vec<u8>, Refusal> {
    std::fs::read(format!("/proc/{pid}/{name}")).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Refusal::NoProcess { pid, reason: "it has exited".into() },
        _ => Refusal::Unreadable { pid, reason: format!("/proc/{pid}/{name}: {e}") },
    })
}

/// Every check before anything is sent. Blocking (it reads node's symbol
/// table, some 100 ms): call it from `spawn_blocking` or before the
/// runtime.
pub fn preflight(pid: u32) -> Result<Target, Refusal> {
    let pidfd = pidfd_open(pid).map_err(|e| match e.raw_os_error() {
        Some(libc::ESRCH) => Refusal::NoProcess { pid, reason: "no such process".into() },
        Some(libc::EINVAL) => Refusal::NoProcess { pid, reason: "not a process id (a thread's?)".into() },
        _ => Refusal::Unreadable { pid, reason: format!("pidfd_open: {e}") },
    })?;
    let stat = String::from_utf8_lossy(&read_proc(pid, "stat")?).into_owned();
    if stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])) {
        return Err(Refusal::NoProcess { pid, reason: "it has exited (a zombie)".into() });
    }

    let binary = node_binary(pid)?;

    let cmdline = read_proc(pid, "cmdline")?;
    let environ = read_proc(pid, "environ")?;
    let flags = NodeFlags::from_process(&cmdline, node_options(&environ).as_deref());
    let port = flags.port();
    let host = flags.host().to_owned();

    // An inspector already open: used as it is, nothing sent.
    let sockets = netns::tcp_sockets(pid)
        .map_err(|e| Refusal::Unreadable { pid, reason: format!("/proc/{pid}/net/tcp: {e}") })?;
    let own = netns::socket_inodes(pid)
        .map_err(|e| Refusal::Unreadable { pid, reason: format!("/proc/{pid}/fd: {e}") })?;
    let open = sockets
        .iter()
        .find(|s| s.state == LISTEN && port != 0 && s.local.port() == port && own.contains(&s.inode));
    if let Some(listener) = open {
        let clients = sockets.iter().filter(|s| netns::is_client(s, port, &own, None)).count();
        if clients > 0 {
            return Err(Refusal::DebuggerAttached { pid, port, clients });
        }
        return Ok(Target {
            pid,
            port,
            already_open: true,
            host,
            listening: Some(listener.local),
            handler_check: HandlerCheck::NotNeeded,
            pidfd: Arc::new(pidfd),
            signal_tree: None,
        });
    }

    if let Some(source) = flags.disable_sigusr1 {
        return Err(Refusal::DisableSigusr1 { pid, found_in: source });
    }
    if let Some((flag, source)) = flags.permission.clone()
        && !flags.allow_inspector
    {
        return Err(Refusal::Permission { pid, flag, found_in: source });
    }
    check_masks(pid)?;
    let (handler_check, signal_tree) = handler_check(pid, &binary)?;

    if port != 0 {
        let ip = host.parse::<IpAddr>().ok();
        if let Some(taken) = sockets
            .iter()
            .find(|s| s.state == LISTEN && !own.contains(&s.inode) && netns::conflicts(&s.local, ip, port))
        {
            let holder = match netns::owner_of(taken.inode, pid) {
                Some((other, comm)) => format!("process {other} ({comm}), on {}", taken.local),
                None => {
                    format!("another process (not found; socket inode {}), on {}", taken.inode, taken.local)
                }
            };
            return Err(Refusal::PortTaken { pid, port, holder });
        }
    }

    Ok(Target {
        pid,
        port,
        already_open: false,
        host,
        listening: None,
        handler_check,
        pidfd: Arc::new(pidfd),
        signal_tree,
    })
}

/// The file of the process that holds node (its executable, or Debian's
/// libnode), or why it is not node.
fn node_binary(pid: u32) -> Result<ProcessBinary, Refusal> {
    let exe = match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(p) => p.display().to_string(),
        // A kernel thread has no executable.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let comm = String::from_utf8_lossy(&read_proc(pid, "comm")?).trim().to_owned();
            return Err(Refusal::NotNode {
                pid,
                exe: comm,
                why: "it has no executable (a kernel thread)".into(),
            });
        }
        Err(e) => return Err(Refusal::Unreadable { pid, reason: format!("/proc/{pid}/exe: {e}") }),
    };
    let found = Loader::default()
        .find_in_process(pid)
        .map_err(|e| Refusal::Unreadable { pid, reason: e.to_string() })?;
    match found {
        Found::V8(b) if b.binary.node => Ok(b),
        Found::V8(b) => Err(Refusal::NotNode {
            pid,
            exe,
            why: format!("{} has V8 but none of node's own code (another V8 embedder)", b.display_path),
        }),
        Found::NotV8 { looked_at } => {
            let files: Vec<&str> = looked_at.iter().map(|(f, _)| f.as_str()).collect();
            Err(Refusal::NotNode { pid, exe, why: format!("no V8 in {}", files.join(", ")) })
        }
    }
}

/// SIGUSR1 must be caught (node's handler, or an application's, which
/// [`handler_check`] tells apart), not ignored, not blocked.
pub(super) fn check_masks(pid: u32) -> Result<(), Refusal> {
    let status = String::from_utf8_lossy(&read_proc(pid, "status")?).into_owned();
    let masks = Masks::parse(&status).ok_or_else(|| Refusal::Unreadable {
        pid,
        reason: format!("no signal masks in /proc/{pid}/status"),
    })?;
    if masks.ignored(SIGUSR1) {
        return Err(Refusal::Ignored { pid });
    }
    if !masks.caught(SIGUSR1) {
        let hint = if masks.blocked(SIGUSR1) {
            "it is also blocked, as node does under --disable-sigusr1 or the permission model (set in a way heaptrace could not see, e.g. after process.title changed the command line); start node with --inspect instead"
        } else {
            "this node may be built without the inspector; start node with --inspect instead"
        };
        return Err(Refusal::NotCaught { pid, hint });
    }
    if masks.blocked(SIGUSR1) {
        return Err(Refusal::Blocked { pid });
    }
    Ok(())
}

/// Whether the application has its own SIGUSR1 watcher, from libuv's
/// signal tree; also where that tree is, to look again just before the
/// signal. The tree's symbol is local, so only a file with `.symtab`
/// has it: official node binaries do; Debian's libuv.so does not.
fn handler_check(pid: u32, node: &ProcessBinary) -> Result<(HandlerCheck, Option<u64>), Refusal> {
    let mut looked_at = vec![node.display_path.clone()];
    let mut found = node.binary.uv_signal_tree.map(|vaddr| (vaddr, node.clone()));
    if found.is_none() {
        for lib in mapped_libuv(pid) {
            looked_at.push(lib.display_path.clone());
            if let Some(vaddr) = lib.binary.uv_signal_tree {
                found = Some((vaddr, lib));
                break;
            }
        }
    }
    let Some((vaddr, file)) = found else {
        let why = format!(
            "no uv__signal_tree symbol in {} (libuv's local symbols are stripped)",
            looked_at.join(" or ")
        );
        return Ok((HandlerCheck::Unavailable(why), None));
    };
    let bias = match file.load_bias(pid) {
        Ok(b) => b,
        Err(e) => return Ok((HandlerCheck::Unavailable(e), None)),
    };
    let tree = vaddr.wrapping_add(bias);
    match sigusr1_watchers(pid, tree) {
        Ok(HandlerCheck::NoAppHandler) => Ok((HandlerCheck::NoAppHandler, Some(tree))),
        other => other.map(|c| (c, None)),
    }
}

/// Reads the tree at `tree` in process `pid`: a refusal if the application
/// watches SIGUSR1, `Unavailable` if the tree cannot be read as expected.
pub(super) fn sigusr1_watchers(pid: u32, tree: u64) -> Result<HandlerCheck, Refusal> {
    match watchers_for(&mut ProcessMemory::new(pid), tree, SIGUSR1) {
        Ok(0) => Ok(HandlerCheck::NoAppHandler),
        Ok(watchers) => Err(Refusal::AppHandlesSigusr1 { pid, watchers }),
        Err(e) => Ok(HandlerCheck::Unavailable(e)),
    }
}

/// A libuv the process maps as a library of its own (distribution builds).
fn mapped_libuv(pid: u32) -> Vec<ProcessBinary> {
    let Ok(maps) = procfs::process::Process::new(pid as i32).and_then(|p| p.maps()) else {
        return Vec::new();
    };
    let mut loader = Loader::default();
    let mut out: Vec<ProcessBinary> = Vec::new();
    for m in maps {
        let procfs::process::MMapPath::Path(path) = &m.pathname else { continue };
        let is_libuv = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libuv"));
        let display_path = path.display().to_string();
        if !is_libuv || m.offset != 0 || out.iter().any(|b| b.display_path == display_path) {
            continue;
        }
        let (start, end) = m.address;
        let attach_path = std::path::PathBuf::from(format!("/proc/{pid}/map_files/{start:x}-{end:x}"));
        if let Ok((file, binary)) = loader.load(&attach_path) {
            out.push(ProcessBinary { attach_path, display_path, file, binary });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::inspector::flags::Source;

    /// Each refusal names the process, what was found, and a way forward.
    #[test]
    fn every_refusal_says_what_to_do() {
        let all = [
            Refusal::NoProcess { pid: 7, reason: "no such process".into() },
            Refusal::Unreadable { pid: 7, reason: "/proc/7/environ: Permission denied".into() },
            Refusal::NotNode { pid: 7, exe: "/usr/bin/sleep".into(), why: "no V8 in /usr/bin/sleep".into() },
            Refusal::DisableSigusr1 { pid: 7, found_in: Source::CommandLine },
            Refusal::Permission { pid: 7, flag: "--permission".into(), found_in: Source::NodeOptions },
            Refusal::NotCaught { pid: 7, hint: "start node with --inspect instead" },
            Refusal::Ignored { pid: 7 },
            Refusal::Blocked { pid: 7 },
            Refusal::AppHandlesSigusr1 { pid: 7, watchers: 1 },
            Refusal::DebuggerAttached { pid: 7, port: 9229, clients: 1 },
            Refusal::PortTaken {
                pid: 7,
                port: 9229,
                holder: "process 8 (python3), on 127.0.0.1:9229".into(),
            },
        ];
        for r in all {
            let msg = r.to_string();
            println!("{msg}");
            assert!(msg.contains('7'), "{msg}");
            let remedy = ["check", "run ", "restart", "start node", "remove", "disconnect", "stop"];
            assert!(remedy.iter().any(|w| msg.contains(w)), "no way forward in: {msg}");
        }
    }
}
