//! Deaths: how a traced process died, with its memory at that moment, and
//! the flight recording that explains it.

use super::{
    group::Group,
    input::ProcStatus,
    process::ProcessState,
    record::{Death, DeathCause, DeathMemory, MemorySource},
    verdict::VerdictState,
};
use crate::units::fmt_bytes;

/// `SIGABRT`: how V8 ends a process after "heap out of memory".
const SIGABRT: u32 = 6;
/// `SIGKILL`: how the OOM killer ends one.
const SIGKILL: u32 = 9;

/// The signal's name, as `kill -l` prints it with the SIG prefix.
pub fn signal_name(signal: u32) -> String {
    const NAMES: [&str; 32] = [
        "0",
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    match NAMES.get(signal as usize) {
        Some(name) if signal > 0 => (*name).to_owned(),
        _ => format!("SIGRTMIN+{}", signal.saturating_sub(34)),
    }
}

/// The signal in a `wait` status, if the process was killed by one.
fn signal_of_status(status: i32) -> Option<u32> {
    let signal = (status & 0x7f) as u32;
    (signal != 0 && signal != 0x7f).then_some(signal)
}

/// Whether, and how, `p` died; `exit_code` is its `wait` status when the
/// kernel gave it. A normal exit (any exit code) is not a death.
pub fn cause(p: &ProcessState, exit_code: Option<i32>) -> Option<(DeathCause, Option<u32>)> {
    let signal = p.diagnosis.fatal_signal.or_else(|| exit_code.and_then(signal_of_status));
    if p.v8_oom {
        return Some((DeathCause::V8Oom, signal.or(Some(SIGABRT))));
    }
    if p.oom_killed {
        return Some((DeathCause::OomKill, Some(SIGKILL)));
    }
    signal.map(|s| (DeathCause::Signal, Some(s)))
}

/// The `death` record of `p`, which died of `cause` at `ts`.
pub fn death(
    p: &ProcessState,
    group: Option<&Group>,
    cause: DeathCause,
    signal: Option<u32>,
    ts: f64,
) -> Death {
    let (status, source) = match p.diagnosis.memory_at_death {
        Some(m) => (m, MemorySource::Kernel),
        None => (p.status, MemorySource::LastSample),
    };
    let cgroup = group.and_then(|g| g.memory.as_ref());
    let memory = DeathMemory {
        rss_anon_bytes: status.rss_anon,
        rss_file_bytes: status.rss_file,
        rss_shmem_bytes: status.rss_shmem,
        vm_bytes: status.vm_size,
        source,
        js_heap_used_bytes: p.gc.heap_last,
        v8_heap_limit_bytes: p.v8_heap_limit,
        v8_old_generation_limit_bytes: p.v8_old_generation_limit,
        cgroup_usage_bytes: cgroup.map(|c| c.usage_bytes),
        cgroup_limit_bytes: cgroup.and_then(|c| c.limit_bytes),
    };
    let verdict = (p.diagnosis.verdict.state != VerdictState::Unknown).then(|| p.diagnosis.verdict.clone());
    Death {
        ts,
        pid: p.pid,
        comm: p.comm.clone(),
        cause,
        signal: signal.map(signal_name),
        explanation: explain(p, cause, signal, &memory, status),
        memory,
        verdict,
        allocation_sites: p.sites.sites().into_iter().take(DEATH_SITES).collect(),
        heap: p.diagnosis.heap.clone(),
        cgroup_path: p.group.clone(),
        cgroup_id: p.cgroup_id,
        container: p.container.clone(),
        dump_path: None,
        flight: Some(Box::new(p.diagnosis.recorder.recording())),
    }
}

/// Allocation sites a death record carries.
const DEATH_SITES: usize = 10;

/// One sentence: what killed it, with the memory that explains it.
fn explain(
    p: &ProcessState,
    cause: DeathCause,
    signal: Option<u32>,
    m: &DeathMemory,
    s: ProcStatus,
) -> String {
    let rss = format!("RSS {} (anon {})", fmt_bytes(s.rss() as f64), fmt_bytes(s.rss_anon as f64));
    let mut text = match cause {
        DeathCause::V8Oom => {
            let heap = match (m.js_heap_used_bytes, m.v8_old_generation_limit_bytes.or(m.v8_heap_limit_bytes))
            {
                (Some(used), Some(limit)) => format!(
                    "JS heap {} of its {} limit ({:.0} %)",
                    fmt_bytes(used as f64),
                    fmt_bytes(limit as f64),
                    used as f64 * 100.0 / limit.max(1) as f64
                ),
                (Some(used), None) => format!("JS heap {}", fmt_bytes(used as f64)),
                _ => "JS heap unknown".to_owned(),
            };
            format!("V8 ran out of JS heap (\"JavaScript heap out of memory\") and aborted: {heap}, {rss}.")
        }
        DeathCause::OomKill => {
            let limit = match (m.cgroup_usage_bytes, m.cgroup_limit_bytes) {
                (_, Some(limit)) => format!("; its cgroup's limit is {}", fmt_bytes(limit as f64)),
                _ => String::new(),
            };
            format!("The kernel's OOM killer ended it at {rss}{limit}.")
        }
        DeathCause::Signal => {
            let name = signal.map_or_else(|| "a signal".to_owned(), signal_name);
            format!("Killed by {name} at {rss}.")
        }
    };
    if p.diagnosis.verdict.state != VerdictState::Unknown {
        text += &format!(" Before: {}", p.diagnosis.verdict.evidence);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_and_statuses() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(11), "SIGSEGV");
        assert_eq!(signal_name(31), "SIGSYS");
        assert_eq!(signal_name(36), "SIGRTMIN+2");
        assert_eq!(signal_of_status(9), Some(9));
        assert_eq!(signal_of_status(0x86), Some(6)); // SIGABRT with core dumped
        assert_eq!(signal_of_status(1 << 8), None); // exit(1)
        assert_eq!(signal_of_status(0), None);
    }
}
