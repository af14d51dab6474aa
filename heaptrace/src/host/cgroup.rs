//! Cgroup facts at the edge: where the v2 hierarchy is mounted, a cgroup's
//! id, and its memory usage and limit from v2 (`memory.current`,
//! `memory.max`) or, on hybrid hosts whose memory controller is still on
//! v1, from v1 (`memory.usage_in_bytes`, `memory.limit_in_bytes`).

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use crate::core::input::{CgroupSample, CgroupVersion};

/// v1 reports "no limit" as a huge page-rounded number.
const V1_UNLIMITED_FROM: u64 = 1 << 62;

struct Mounts {
    v2: Option<PathBuf>,
    v1_memory: Option<PathBuf>,
}

fn mounts() -> &'static Mounts {
    static MOUNTS: OnceLock<Mounts> = OnceLock::new();
    MOUNTS.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut m = Mounts { v2: None, v1_memory: None };
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 {
                continue;
            }
            match f[2] {
                "cgroup2" if m.v2.is_none() => m.v2 = Some(PathBuf::from(f[1])),
                "cgroup" if f[3].split(',').any(|o| o == "memory") => m.v1_memory = Some(PathBuf::from(f[1])),
                _ => {}
            }
        }
        m
    })
}

/// Where the v2 hierarchy is mounted (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on hybrid hosts).
pub fn v2_root() -> Option<&'static Path> {
    mounts().v2.as_deref()
}

/// The directory of a v2 cgroup path.
pub fn v2_dir(path: &str) -> Option<PathBuf> {
    Some(v2_root()?.join(path.trim_start_matches('/')))
}

/// A cgroup's id: the inode of its v2 directory (what
/// `bpf_get_current_cgroup_id` returns). 0 if unknown.
pub fn cgroup_id(path: &str) -> u64 {
    v2_dir(path).and_then(|d| std::fs::metadata(d).ok()).map_or(0, |m| m.ino())
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Memory usage and limit of the cgroup `path` (v2 path), using `pid` (a
/// member) to find its v1 memory cgroup when v2 has no memory controller.
pub fn memory(path: &str, pid: u32, ts_ns: u64) -> Option<CgroupSample> {
    if let Some(dir) = v2_dir(path)
        && let Some(usage) = read_u64(&dir.join("memory.current"))
    {
        let max = std::fs::read_to_string(dir.join("memory.max")).ok();
        let limit = max.as_deref().map(str::trim).and_then(|m| m.parse().ok());
        return Some(CgroupSample {
            ts_ns,
            cgroup_path: path.to_owned(),
            usage_bytes: usage,
            limit_bytes: limit,
            source: CgroupVersion::V2,
        });
    }
    let root = mounts().v1_memory.as_ref()?;
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let v1_path = text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, p) = (f.next()?, f.next()?, f.next()?);
        controllers.split(',').any(|c| c == "memory").then_some(p)
    })?;
    // Only when the v1 memory cgroup is the same group (as with container
    // runtimes and systemd on hybrid hosts): another v1 path, typically the
    // root, would report memory that is not this group's.
    if v1_path != path {
        return None;
    }
    let dir = root.join(v1_path.trim_start_matches('/'));
    let usage = read_u64(&dir.join("memory.usage_in_bytes"))?;
    let limit = read_u64(&dir.join("memory.limit_in_bytes")).filter(|&l| l < V1_UNLIMITED_FROM);
    Some(CgroupSample {
        ts_ns,
        cgroup_path: path.to_owned(),
        usage_bytes: usage,
        limit_bytes: limit,
        source: CgroupVersion::V1,
    })
}

/// The memory limits over a process, its cgroup's and every ancestor's
/// that has one, as (cgroup path, usage, limit): v2's `memory.max`, or on
/// hybrid hosts v1's `memory.limit_in_bytes` of its v1 memory cgroup, which
/// need not be its v2 group.
pub fn memory_limits(pid: u32) -> Vec<(String, u64, u64)> {
    let mut limits = Vec::new();
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let v2 = text.lines().find_map(|l| l.strip_prefix("0::"));
    let v1 = text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, p) = (f.next()?, f.next()?, f.next()?);
        controllers.split(',').any(|c| c == "memory").then_some(p)
    });
    let ancestors = |path: &str| -> Vec<String> {
        let mut all = vec![path.to_owned()];
        let mut p = path;
        while let Some((parent, _)) = p.rsplit_once('/')
            && !parent.is_empty()
        {
            all.push(parent.to_owned());
            p = parent;
        }
        all
    };
    for path in v2.map(ancestors).unwrap_or_default() {
        let Some(dir) = v2_dir(&path) else { continue };
        let limit = std::fs::read_to_string(dir.join("memory.max")).ok().and_then(|m| m.trim().parse().ok());
        if let (Some(usage), Some(limit)) = (read_u64(&dir.join("memory.current")), limit) {
            limits.push((path, usage, limit));
        }
    }
    if let (Some(root), Some(v1)) = (mounts().v1_memory.as_ref(), v1) {
        for path in ancestors(v1) {
            let dir = root.join(path.trim_start_matches('/'));
            let limit = read_u64(&dir.join("memory.limit_in_bytes")).filter(|&l| l < V1_UNLIMITED_FROM);
            if let (Some(usage), Some(limit)) = (read_u64(&dir.join("memory.usage_in_bytes")), limit) {
                limits.push((path, usage, limit));
            }
        }
    }
    limits
}
