//! Checks made before loading anything, so that a missing privilege or
//! kernel feature gets a message that says what to do, not an errno.

use std::{fs, path::Path};

use thiserror::Error;

/// Where tracefs is usually mounted; aya reads tracepoint ids from here (or
/// from debugfs's `tracing` directory).
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, Error)]
pub enum PreflightError {
    /// Missing CAP_BPF / CAP_PERFMON (or CAP_SYS_ADMIN).
    #[error(
        "heaptrace needs to load eBPF programs: run it as root (sudo heaptrace ...) \
         or grant CAP_BPF and CAP_PERFMON (missing: {missing})"
    )]
    NotPrivileged { missing: String },
    /// tracefs is not mounted.
    #[error(
        "tracefs is not mounted, so tracepoints cannot be attached; mount it with \
         `mount -t tracefs nodev /sys/kernel/tracing`"
    )]
    NoTracefs,
    /// The kernel has no tracepoint that heaptrace requires.
    #[error("this kernel lacks the tracepoint {0} (needs CONFIG_TRACEPOINTS and CONFIG_FTRACE_SYSCALLS)")]
    MissingTracepoint(&'static str),
}

pub fn check() -> Result<(), PreflightError> {
    check_privileges()?;
    raise_memlock_limit();
    let tracefs =
        TRACEFS.iter().map(Path::new).find(|p| p.join("events").is_dir()).ok_or(PreflightError::NoTracefs)?;
    for (path, name) in [
        ("sched/sched_process_exit", "sched:sched_process_exit"),
        ("raw_syscalls/sys_exit", "raw_syscalls:sys_exit"),
    ] {
        if !tracefs.join("events").join(path).is_dir() {
            return Err(PreflightError::MissingTracepoint(name));
        }
    }
    Ok(())
}

fn check_privileges() -> Result<(), PreflightError> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(cap, _)| !has(*cap))
        .map(|(_, name)| name)
        .collect();
    Err(PreflightError::NotPrivileged { missing: missing.join(", ") })
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK. Raising it is
/// harmless elsewhere; failure is left for the map creation to report.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit reads the struct we pass by pointer and nothing else.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

/// Offset of `field` in a tracepoint's record, from its `format` file.
pub fn tracepoint_field_offset(category: &str, event: &str, field: &str) -> Option<u32> {
    TRACEFS.iter().find_map(|root| {
        let text = fs::read_to_string(format!("{root}/events/{category}/{event}/format")).ok()?;
        parse_field_offset(&text, field)
    })
}

/// Finds `offset:N;` on the line declaring `field` in a tracepoint format.
fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?.split(';').next()?;
        let name = decl.rsplit(|c: char| c.is_whitespace() || c == '*').next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        let offset = line.split("offset:").nth(1)?.split(';').next()?;
        offset.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::parse_field_offset;

    const EXIT_FORMAT: &str = "name: sched_process_exit
ID: 369
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:int prio;\toffset:28;\tsize:4;\tsigned:1;
\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;
";

    #[test]
    fn finds_fields_by_exact_name() {
        assert_eq!(parse_field_offset(EXIT_FORMAT, "group_dead"), Some(32));
        assert_eq!(parse_field_offset(EXIT_FORMAT, "pid"), Some(24));
        assert_eq!(parse_field_offset(EXIT_FORMAT, "comm"), Some(8));
        assert_eq!(parse_field_offset(EXIT_FORMAT, "group"), None);
        assert_eq!(parse_field_offset("garbage", "pid"), None);
    }
}
