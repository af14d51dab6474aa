//! Which processes to trace: the selection flags, the pure rules that
//! apply them to a process, and the `/proc` scan that finds the processes
//! already running when tracing starts.
//!
//! Rules: `--pid` names processes outright. The other flags select by
//! property and combine like `pgrep`'s: `--comm` and the cgroup filters
//! (`--container`, `--cgroup`) must all match when both are given; repeats
//! of one flag are alternatives. `--all` selects everything.

use heaptrace_common::select;

use crate::{core::container::parse_cgroup_path, kernel::KernelSelection};

/// The kernel keeps 15 bytes of a command name.
pub const COMM_MAX: usize = 15;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub pids: Vec<u32>,
    pub all: bool,
    pub comms: Vec<String>,
    /// Container ids or prefixes of them (lower-case hex).
    pub containers: Vec<String>,
    /// Paths in the v2 hierarchy ("/kubepods.slice/..."), without a
    /// trailing slash; a cgroup's descendants match too.
    pub cgroups: Vec<String>,
}

impl Selection {
    /// Whether processes are selected by property (and so new ones are
    /// picked up at exec and fork), not only named by pid.
    pub fn follows(&self) -> bool {
        self.all || !self.comms.is_empty() || self.by_cgroup()
    }

    fn by_cgroup(&self) -> bool {
        !self.containers.is_empty() || !self.cgroups.is_empty()
    }

    /// The selection as the flags that give it.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.all {
            parts.push("--all".to_owned());
        }
        for (flag, values) in
            [("--comm", &self.comms), ("--container", &self.containers), ("--cgroup", &self.cgroups)]
        {
            parts.extend(values.iter().map(|v| format!("{flag} {v}")));
        }
        parts.extend(self.pids.iter().map(|p| format!("--pid {p}")));
        parts.join(" ")
    }

    /// What the kernel programs check at exec.
    pub fn kernel(&self) -> KernelSelection {
        let mut bits = 0;
        if self.all {
            bits |= select::ALL;
        }
        if !self.comms.is_empty() {
            bits |= select::COMM;
        }
        if self.by_cgroup() {
            bits |= select::CGROUP;
        }
        KernelSelection { bits, comms: self.comms.clone() }
    }

    /// Whether a process in this cgroup passes the cgroup filters (true
    /// when there are none).
    pub fn cgroup_matches(&self, path: &str) -> bool {
        if !self.by_cgroup() {
            return true;
        }
        let under = |root: &String| {
            root == "/"
                || path == root
                || path.strip_prefix(root.as_str()).is_some_and(|rest| rest.starts_with('/'))
        };
        self.cgroups.iter().any(under)
            || parse_cgroup_path(path)
                .is_some_and(|c| self.containers.iter().any(|prefix| c.container_id.starts_with(prefix)))
    }

    /// Whether a process with this comm and cgroup is selected by property.
    pub fn matches(&self, comm: &str, cgroup_path: Option<&str>) -> bool {
        if self.all {
            return true;
        }
        if !self.follows() {
            return false;
        }
        let comm_ok = self.comms.is_empty() || self.comms.iter().any(|c| comm_key(c) == comm_key(comm));
        comm_ok && (!self.by_cgroup() || cgroup_path.is_some_and(|p| self.cgroup_matches(p)))
    }
}

/// A comm as compared by the kernel: its first 15 bytes.
fn comm_key(s: &str) -> &[u8] {
    &s.as_bytes()[..s.len().min(COMM_MAX)]
}

/// The v2 cgroup path of a process (the `0::` line of /proc/PID/cgroup).
pub fn cgroup_path_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("0::").map(str::to_owned))
}

/// Processes running now that the selection picks, heaptrace excepted,
/// kernel threads excepted (they have no user memory).
pub fn scan(selection: &Selection) -> Vec<u32> {
    let me = std::process::id();
    let Ok(all) = procfs::process::all_processes() else { return Vec::new() };
    let mut pids: Vec<u32> = all
        .filter_map(Result::ok)
        .filter(|p| p.pid as u32 != me)
        .filter_map(|p| {
            let stat = p.stat().ok()?;
            // PF_KTHREAD
            if stat.flags & 0x0020_0000 != 0 || stat.state == 'Z' {
                return None;
            }
            let pid = p.pid as u32;
            selection.matches(&stat.comm, cgroup_path_of(pid).as_deref()).then_some(pid)
        })
        .collect();
    pids.sort_unstable();
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "466a09d23d6254a078b7cfa36bb187d386b82ac3d3749feca36d297030fac3bf";

    #[test]
    fn pids_alone_do_not_follow() {
        let s = Selection { pids: vec![4], ..Default::default() };
        assert!(!s.follows());
        assert_eq!(s.kernel().bits, 0);
        assert!(!s.matches("node", Some("/")));
    }

    #[test]
    fn comm_and_cgroup_filters_intersect() {
        let s =
            Selection { comms: vec!["node".into()], containers: vec![ID[..12].into()], ..Default::default() };
        assert_eq!(s.kernel().bits, select::COMM | select::CGROUP);
        let pod = format!("/libpod_parent/libpod-{ID}");
        assert!(s.matches("node", Some(&pod)));
        assert!(!s.matches("bash", Some(&pod)));
        assert!(!s.matches("node", Some("/user.slice/session-1.scope")));
        assert!(!s.matches("node", None));
    }

    #[test]
    fn cgroup_paths_match_their_subtree_only() {
        let s = Selection { cgroups: vec!["/kubepods/burstable/podabc".into()], ..Default::default() };
        assert!(s.cgroup_matches("/kubepods/burstable/podabc"));
        assert!(s.cgroup_matches("/kubepods/burstable/podabc/c1"));
        assert!(!s.cgroup_matches("/kubepods/burstable/podabcd"));
        assert!(!s.cgroup_matches("/kubepods"));
        assert!(s.matches("anything", Some("/kubepods/burstable/podabc/c1")));
    }

    #[test]
    fn long_comms_compare_on_the_kernels_15_bytes() {
        let s = Selection { comms: vec!["a-very-long-command-name".into()], ..Default::default() };
        assert!(s.matches("a-very-long-com", None));
        assert!(!s.matches("a-very-long-cox", None));
    }

    #[test]
    fn all_matches_everything() {
        let s = Selection { all: true, ..Default::default() };
        assert!(s.follows());
        assert_eq!(s.kernel().bits, select::ALL);
        assert!(s.matches("x", None));
    }
}
