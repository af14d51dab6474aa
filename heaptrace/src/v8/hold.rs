//! Holding a just-exec'd process still while its GC probes are attached.
//!
//! With a selection, probes are attached per binary, so every process of a
//! binary heaptrace has seen is covered from its first instruction. The
//! first process of a binary it has not seen must wait for the symbol
//! tables to be read (about 200 ms for node), while node's first GC can
//! come 25 ms after start.
//! That process is stopped with ptrace (`PTRACE_SEIZE` + `PTRACE_INTERRUPT`)
//! rather than SIGSTOP: a ptrace stop is reported only to the tracer, so the
//! parent (a shell, a container runtime) never sees a stopped child.

use std::time::{Duration, Instant};

use nix::{
    sys::{
        ptrace,
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};

/// Give up waiting for the stop after this long (a process in an
/// uninterruptible sleep): it then runs on unheld.
const STOP_TIMEOUT: Duration = Duration::from_millis(100);

/// A process stopped under ptrace; dropping it lets the process go.
pub struct Held {
    pid: Pid,
    since: Instant,
}

impl Held {
    /// How long it has been held so far.
    pub fn held_ms(&self) -> f64 {
        self.since.elapsed().as_secs_f64() * 1e3
    }
}

/// Stops `pid`, or says why it could not (already traced by a debugger,
/// gone, not permitted).
pub fn hold(pid: u32) -> Result<Held, String> {
    let pid = Pid::from_raw(pid as i32);
    ptrace::seize(pid, ptrace::Options::empty()).map_err(|e| format!("ptrace seize: {e}"))?;
    let held = Held { pid, since: Instant::now() };
    ptrace::interrupt(pid).map_err(|e| format!("ptrace interrupt: {e}"))?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        match waitpid(pid, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(200))
            }
            Ok(WaitStatus::StillAlive) => return Err("it did not stop within 100 ms".into()),
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => return Err("it exited".into()),
            Ok(_) => return Ok(held),
            Err(e) => return Err(format!("waitpid: {e}")),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Detaching resumes it. It can only fail if the process is gone.
        let _ = ptrace::detach(self.pid, None);
    }
}
