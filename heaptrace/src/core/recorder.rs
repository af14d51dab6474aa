//! The flight recorder: the last minutes of one process, kept so that a
//! death can be explained after the fact, even when the process's own
//! stderr (V8's "Last few GCs") is lost, as it often is in Kubernetes.
//!
//! Bounded per process: [`MEMORY_POINTS`] memory readings (five minutes at
//! one per second), [`GCS`] GCs, [`VERDICTS`] verdict changes and
//! [`MAPPINGS`] large mappings, about 40 KiB at most.

use std::collections::VecDeque;

use serde::Serialize;

use super::{
    record::LargeMapping,
    verdict::{MemoryKind, VerdictState},
};

/// Memory readings kept: five minutes at one per second.
pub const MEMORY_POINTS: usize = 300;
/// GCs kept (V8's own "Last few GCs" shows two to four).
pub const GCS: usize = 32;
pub const VERDICTS: usize = 16;
pub const MAPPINGS: usize = 32;

/// One memory reading.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MemoryPoint {
    /// Unix time, seconds.
    pub ts: f64,
    pub rss_anon_bytes: u64,
    pub rss_file_bytes: u64,
    pub rss_shmem_bytes: u64,
    pub committed_bytes: u64,
    pub native_bytes: u64,
    /// Heap used after the latest GC (V8 processes).
    pub js_heap_bytes: Option<u64>,
}

/// One GC, as `--trace-gc` (and V8's "Last few GCs") prints it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GcEntry {
    pub ts: f64,
    pub tid: u32,
    pub collector: &'static str,
    pub reason: &'static str,
    pub pause_ms: f64,
    pub heap_before_bytes: u64,
    pub heap_after_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerdictEntry {
    pub ts: f64,
    pub state: VerdictState,
    pub memory: Option<MemoryKind>,
    pub slope_bytes_per_s: Option<f64>,
}

/// What the recorder holds, oldest first; a death's dump file carries it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FlightRecording {
    pub memory: Vec<MemoryPoint>,
    pub gcs: Vec<GcEntry>,
    pub verdicts: Vec<VerdictEntry>,
    pub large_mappings: Vec<LargeMapping>,
}

#[derive(Default)]
pub struct FlightRecorder {
    memory: VecDeque<MemoryPoint>,
    gcs: VecDeque<GcEntry>,
    verdicts: VecDeque<VerdictEntry>,
    mappings: VecDeque<LargeMapping>,
}

fn push<T>(ring: &mut VecDeque<T>, bound: usize, item: T) {
    if ring.len() == bound {
        ring.pop_front();
    }
    ring.push_back(item);
}

impl FlightRecorder {
    pub fn memory(&mut self, point: MemoryPoint) {
        push(&mut self.memory, MEMORY_POINTS, point);
    }

    pub fn gc(&mut self, gc: GcEntry) {
        push(&mut self.gcs, GCS, gc);
    }

    pub fn verdict(&mut self, entry: VerdictEntry) {
        push(&mut self.verdicts, VERDICTS, entry);
    }

    pub fn mapping(&mut self, mapping: LargeMapping) {
        push(&mut self.mappings, MAPPINGS, mapping);
    }

    /// The latest memory reading.
    pub fn last_memory(&self) -> Option<&MemoryPoint> {
        self.memory.back()
    }

    pub fn recording(&self) -> FlightRecording {
        FlightRecording {
            memory: self.memory.iter().copied().collect(),
            gcs: self.gcs.iter().cloned().collect(),
            verdicts: self.verdicts.iter().cloned().collect(),
            large_mappings: self.mappings.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_keep_the_latest_within_their_bounds() {
        let mut r = FlightRecorder::default();
        for i in 0..(MEMORY_POINTS + 10) {
            r.memory(MemoryPoint {
                ts: i as f64,
                rss_anon_bytes: i as u64,
                rss_file_bytes: 0,
                rss_shmem_bytes: 0,
                committed_bytes: 0,
                native_bytes: 0,
                js_heap_bytes: None,
            });
        }
        let rec = r.recording();
        assert_eq!(rec.memory.len(), MEMORY_POINTS);
        assert_eq!(rec.memory[0].ts, 10.0);
        assert_eq!(rec.memory.last().unwrap().ts, (MEMORY_POINTS + 9) as f64);
    }
}
