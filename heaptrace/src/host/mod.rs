//! The host as heaptrace sees it: process facts from `/proc`, the
//! selection rules and the `/proc` scan ([`select`]), cgroups ([`cgroup`])
//! and container names ([`names`]). This is an edge: it does I/O and hands
//! plain values to the collector and the core.

pub mod cgroup;
pub mod names;
pub mod select;

use thiserror::Error;

use crate::core::{Mapping, ProcStatus, ProcessInfo};

/// Problems finding or reading a process.
#[derive(Debug, Error)]
pub enum ProcessError {
    /// The pid names no running process.
    #[error("no process with pid {0} (check the pid with `ps -p {0}`)")]
    NoSuchProcess(u32),
    /// `/proc/PID/...` exists but reading it was refused.
    #[error(
        "cannot read /proc/{pid}/{file}: permission denied. Reading another process's memory map needs \
         ptrace access to it: run heaptrace as root (with CAP_SYS_PTRACE), and note that processes that are \
         not dumpable (prctl PR_SET_DUMPABLE 0) refuse it even to root"
    )]
    Refused { pid: u32, file: &'static str },
    /// `/proc/PID/...` exists but could not be read.
    #[error("cannot read /proc/{pid}/{file}: {reason}")]
    Unreadable { pid: u32, file: &'static str, reason: String },
}

fn proc_error(pid: u32, file: &'static str, e: procfs::ProcError) -> ProcessError {
    match e {
        procfs::ProcError::PermissionDenied(_) => ProcessError::Refused { pid, file },
        procfs::ProcError::NotFound(_) => ProcessError::NoSuchProcess(pid),
        procfs::ProcError::Io(io, _) => ProcessError::Unreadable { pid, file, reason: io.to_string() },
        other => ProcessError::Unreadable { pid, file, reason: other.to_string() },
    }
}

/// Fails with [`ProcessError::NoSuchProcess`] unless `pid` is a live process
/// (not a zombie, not a thread id).
pub fn check_exists(pid: u32) -> Result<(), ProcessError> {
    let p = procfs::process::Process::new(pid as i32).map_err(|_| ProcessError::NoSuchProcess(pid))?;
    let stat = p.stat().map_err(|_| ProcessError::NoSuchProcess(pid))?;
    let is_thread_group_leader = std::fs::metadata(format!("/proc/{pid}/task/{pid}")).is_ok()
        && p.status().map(|s| s.tgid == pid as i32).unwrap_or(false);
    if stat.state == 'Z' || stat.state == 'X' || !is_thread_group_leader {
        return Err(ProcessError::NoSuchProcess(pid));
    }
    Ok(())
}

/// Everything the core needs at attach: comm, brk, existing mappings, RSS.
pub fn process_info(pid: u32, ts_ns: u64) -> Result<ProcessInfo, ProcessError> {
    check_exists(pid)?;
    let p = procfs::process::Process::new(pid as i32).map_err(|_| ProcessError::NoSuchProcess(pid))?;
    let unreadable = |file| move |e| proc_error(pid, file, e);
    let stat = p.stat().map_err(unreadable("stat"))?;
    let status = read_status(pid).ok_or(ProcessError::NoSuchProcess(pid))?;
    let maps = p.maps().map_err(unreadable("maps"))?;

    let start_brk = stat.start_brk.unwrap_or(0);
    let mut brk = start_brk;
    let mut mappings = Vec::new();
    for m in maps {
        use procfs::process::{MMPermissions as P, MMapPath};
        match &m.pathname {
            MMapPath::Heap => {
                brk = m.address.1;
                continue;
            }
            MMapPath::Stack | MMapPath::Vdso | MMapPath::Vvar | MMapPath::Vsyscall | MMapPath::Rollup => {
                continue;
            }
            // Newer kernels name more special mappings ("[vvar_vclock]", ...).
            // Named anonymous memory ("[anon:...]") is ordinary mmap memory.
            MMapPath::Other(name) if name.starts_with('[') && !name.starts_with("[anon") => continue,
            _ => {}
        }
        let mut prot = 0;
        for (perm, bit) in [(P::READ, 1), (P::WRITE, 2), (P::EXECUTE, 4)] {
            if m.perms.contains(perm) {
                prot |= bit;
            }
        }
        mappings.push(Mapping {
            start: m.address.0,
            end: m.address.1,
            prot,
            shared: m.perms.contains(P::SHARED),
            file: m.inode != 0,
        });
    }
    let cgroup_path = select::cgroup_path_of(pid);
    let cgroup_id = cgroup_path.as_deref().map_or(0, cgroup::cgroup_id);
    let ns_pid =
        p.status().ok().and_then(|s| s.nspid).and_then(|ids| ids.last().copied()).map(|id| id as u32);
    Ok(ProcessInfo {
        pid,
        comm: stat.comm,
        ts_ns,
        start_brk,
        brk,
        mappings,
        status,
        cgroup_path,
        ns_pid,
        cgroup_id,
        max_old_space_bytes: heap_limit(pid),
        ..Default::default()
    })
}

/// `--max-old-space-size` of a node process, from its command line or its
/// NODE_OPTIONS (the command line wins, as in node).
fn heap_limit(pid: u32) -> Option<u64> {
    let split = |raw: Vec<u8>| -> Vec<String> {
        raw.split(|&b| b == 0).map(|s| String::from_utf8_lossy(s).into_owned()).collect()
    };
    let args = split(std::fs::read(format!("/proc/{pid}/cmdline")).ok()?);
    let env = std::fs::read(format!("/proc/{pid}/environ")).map(split).unwrap_or_default();
    let node_options = env.iter().find_map(|e| e.strip_prefix("NODE_OPTIONS="));
    max_old_space_size(&args, node_options)
}

/// The old-generation limit, in bytes, that `--max-old-space-size=MiB` (or
/// `--max_old_space_size MiB`) sets. Only node's own flags count: those
/// before the script.
pub fn max_old_space_size(args: &[String], node_options: Option<&str>) -> Option<u64> {
    fn scan<'a>(words: impl Iterator<Item = &'a str>) -> Option<u64> {
        let mut found = None;
        let mut words = words.peekable();
        while let Some(w) = words.next() {
            let w = w.replace('_', "-");
            if let Some(v) = w.strip_prefix("--max-old-space-size=") {
                found = v.parse::<u64>().ok().or(found);
            } else if w == "--max-old-space-size" {
                found = words.next().and_then(|v| v.parse::<u64>().ok()).or(found);
            } else if !w.starts_with('-') {
                break; // the script: what follows are its own arguments
            }
        }
        found.map(|mib| mib << 20)
    }
    let from_cli = scan(args.iter().skip(1).map(String::as_str));
    from_cli.or_else(|| scan(node_options?.split_whitespace()))
}

/// Current memory figures, or None if the process is gone (or a zombie,
/// which has no memory left to report).
pub fn read_status(pid: u32) -> Option<ProcStatus> {
    let s = procfs::process::Process::new(pid as i32).ok()?.status().ok()?;
    let kib = |v: Option<u64>| v.map(|kb| kb * 1024);
    Some(ProcStatus {
        vm_size: kib(s.vmsize)?,
        rss_anon: kib(s.rssanon)?,
        rss_file: kib(s.rssfile)?,
        rss_shmem: kib(s.rssshmem)?,
    })
}

/// This host's name (empty if unreadable).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn heap_limit_from_flags() {
        assert_eq!(
            max_old_space_size(&args(&["node", "--max-old-space-size=512", "app.js"]), None),
            Some(512 << 20)
        );
        assert_eq!(
            max_old_space_size(&args(&["node", "--max_old_space_size", "64", "app.js"]), None),
            Some(64 << 20)
        );
        // The script's own arguments are not node's.
        assert_eq!(max_old_space_size(&args(&["node", "app.js", "--max-old-space-size=9"]), None), None);
        assert_eq!(
            max_old_space_size(&args(&["node", "app.js"]), Some("--max-old-space-size=256")),
            Some(256 << 20)
        );
        assert_eq!(
            max_old_space_size(
                &args(&["node", "--max-old-space-size=128", "a.js"]),
                Some("--max-old-space-size=256")
            ),
            Some(128 << 20)
        );
        assert_eq!(max_old_space_size(&args(&["node", "--max-old-space-size=x", "a.js"]), None), None);
    }
}
