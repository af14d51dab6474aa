//! What a heap snapshot costs the process, said before one is taken, and
//! the bounds it is refused above (`--force` lifts both). The figures are
//! bench/results/heap.md's (`cargo xtask bench-heap`): on heaps of small
//! objects, the worst case, node paused 31-56 ms per MiB of JS heap in use
//! (V8 walks every object; node's own `--heapsnapshot-signal` pauses as
//! long) and its RSS rose by 6-10 times the heap while V8 built the
//! snapshot. Larger objects cost less: 66 MiB of 800 KB arrays paused 0.5 s.

use std::time::Duration;

use crate::{host, units::fmt_bytes};

/// The worst pause per MiB of JS heap in use measured, rounded up.
pub const PAUSE_PER_MIB: Duration = Duration::from_millis(60);

/// `--max-heap`'s default: a snapshot of a heap this large pauses the
/// process for up to about 15 s.
pub const DEFAULT_MAX_HEAP: u64 = 256 << 20;

/// The longest a snapshot of a heap with this much in use pauses the
/// process, on the measured worst case.
pub fn expected_pause(heap_used: u64) -> Duration {
    PAUSE_PER_MIB.mul_f64(heap_used as f64 / (1 << 20) as f64)
}

/// The extra memory node needs while V8 builds a snapshot: 7 times the heap
/// in use and 48 MiB, above every measured case (141 MiB for 14 MiB,
/// 745 MiB for 107 MiB, 3,231 MiB for 525 MiB).
pub fn extra_memory(heap_used: u64) -> u64 {
    heap_used.saturating_mul(7).saturating_add(48 << 20)
}

/// The memory heaptrace itself needs to analyse a snapshot of a heap this
/// large: 12 times the heap and 128 MiB, above every measured case (146 MiB
/// for a 14 MiB heap, 1,209 MiB for 107 MiB, 6,037 MiB for 525 MiB: the
/// snapshot is about 1.7 times the heap, and v8-heap-parser's graph and
/// dominator tree about 6 times the snapshot).
pub fn analysis_memory(heap_used: u64) -> u64 {
    heap_used.saturating_mul(12).saturating_add(128 << 20)
}

/// How much more memory the process can take before a limit stops it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Headroom {
    pub bytes: u64,
    /// Which limit: "its cgroup /x's memory.max (512.0 MiB)", or "the
    /// host's available memory".
    pub limit: String,
}

/// The smallest headroom over the process's cgroups and their ancestors
/// (the limit less the usage) and the host's `MemAvailable`.
pub fn headroom(pid: u32) -> Option<Headroom> {
    let mut best: Option<Headroom> = host_available();
    for (path, usage, limit) in host::cgroup::memory_limits(pid) {
        let bytes = limit.saturating_sub(usage);
        if best.as_ref().is_none_or(|b| bytes < b.bytes) {
            let limit = format!("its cgroup {path}'s memory limit ({})", fmt_bytes(limit as f64));
            best = Some(Headroom { bytes, limit });
        }
    }
    best
}

/// The host's `MemAvailable`.
pub fn host_available() -> Option<Headroom> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = meminfo.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?.split_whitespace().next()?;
    let bytes = kb.parse::<u64>().ok()? * 1024;
    Some(Headroom { bytes, limit: "the host's available memory (MemAvailable)".into() })
}

/// Why a snapshot must not be taken without `--force`, if it must not:
/// too long a pause, or not the memory the process (`headroom`) or the
/// host (`host`: the process's extra memory and heaptrace's analysis both
/// come out of it) has left. Under memory pressure the kernel's OOM killer
/// could pick the traced process, not heaptrace.
pub fn refusal(
    heap_used: u64,
    max_heap: u64,
    headroom: Option<&Headroom>,
    host: Option<&Headroom>,
) -> Option<String> {
    let pause = fmt_pause(expected_pause(heap_used));
    if heap_used > max_heap {
        return Some(format!(
            "its JS heap holds {} in use, above --max-heap {}: a snapshot could pause its JavaScript for up \
             to {pause}",
            fmt_bytes(heap_used as f64),
            fmt_bytes(max_heap as f64)
        ));
    }
    let needed = extra_memory(heap_used);
    match headroom {
        Some(room) if room.bytes < needed => Some(format!(
            "a snapshot of its {} JS heap needs up to {} more memory inside the process while V8 builds it, \
             and {} leaves it {}: it could be OOM-killed",
            fmt_bytes(heap_used as f64),
            fmt_bytes(needed as f64),
            room.limit,
            fmt_bytes(room.bytes as f64)
        )),
        _ => {
            let both = needed.saturating_add(analysis_memory(heap_used));
            let host = host.filter(|h| h.bytes < both)?;
            Some(format!(
                "a snapshot of its {} JS heap needs up to {} in the process and {} in heaptrace to analyse it, \
                 and {} is {}: the kernel's OOM killer could pick the process",
                fmt_bytes(heap_used as f64),
                fmt_bytes(needed as f64),
                fmt_bytes(analysis_memory(heap_used) as f64),
                host.limit,
                fmt_bytes(host.bytes as f64)
            ))
        }
    }
}

pub fn fmt_pause(pause: Duration) -> String {
    if pause < Duration::from_secs(1) {
        format!("{} ms", pause.as_millis().max(1))
    } else {
        format!("{:.1} s", pause.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_bounds_cover_every_measured_case() {
        // bench/results/heap.md: (heap in use, pause ms, node's extra peak).
        for (heap, pause_ms, extra) in [(14, 453, 141), (107, 5065, 745), (525, 29310, 3231)] {
            assert!(expected_pause(heap * MIB) >= Duration::from_millis(pause_ms), "{heap} MiB");
            assert!(extra_memory(heap * MIB) >= extra * MIB, "{heap} MiB");
        }
        // heaptrace's own peak RSS: (heap in use, MiB).
        for (heap, peak) in [(14, 146), (107, 1209), (525, 6037)] {
            assert!(analysis_memory(heap * MIB) >= peak * MIB, "{heap} MiB");
        }
        assert_eq!(fmt_pause(expected_pause(DEFAULT_MAX_HEAP)), "15.4 s");
    }

    #[test]
    fn refused_above_the_heap_bound_or_without_room() {
        assert_eq!(refusal(100 * MIB, DEFAULT_MAX_HEAP, None, None), None);
        let over = refusal(300 * MIB, DEFAULT_MAX_HEAP, None, None).unwrap();
        assert!(
            over.contains("300.0 MiB in use, above --max-heap 256.0 MiB") && over.contains("18.0 s"),
            "{over}"
        );
        let tight = Headroom { bytes: 200 * MIB, limit: "its cgroup /app's memory limit (1.0 GiB)".into() };
        let no_room = refusal(100 * MIB, DEFAULT_MAX_HEAP, Some(&tight), None).unwrap();
        assert!(no_room.contains("needs up to 748.0 MiB more memory"), "{no_room}");
        assert!(no_room.contains("/app's memory limit (1.0 GiB) leaves it 200.0 MiB"), "{no_room}");
        let roomy = Headroom { bytes: 4 << 30, limit: String::new() };
        assert_eq!(refusal(100 * MIB, DEFAULT_MAX_HEAP, Some(&roomy), Some(&roomy)), None);
        // The process has room, the host not for both it and heaptrace.
        let host = Headroom { bytes: 1 << 30, limit: "the host's available memory (MemAvailable)".into() };
        let no_host = refusal(100 * MIB, DEFAULT_MAX_HEAP, Some(&roomy), Some(&host)).unwrap();
        assert!(no_host.contains("748.0 MiB in the process and 1.3 GiB in heaptrace"), "{no_host}");
    }
}
