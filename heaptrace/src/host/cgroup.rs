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
