//! V8 garbage collection: names for V8's enums, and per-process pause
//! aggregates (histograms per kind, totals, heap after the last major GC).

use hdrhistogram::Histogram;

use super::input::GcPause;

/// `kind` as prom-client and OpenTelemetry name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GcKind {
    Minor,
    Major,
    Unknown,
}

impl GcKind {
    pub fn of(collector: Option<u32>) -> Self {
        match collector {
            Some(0) | Some(2) => GcKind::Minor,
            Some(1) => GcKind::Major,
            _ => GcKind::Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GcKind::Minor => "minor",
            GcKind::Major => "major",
            GcKind::Unknown => "unknown",
        }
    }
}

/// V8's name for a `GarbageCollector`, as `--trace-gc` prints it. Value 2 was
/// minor mark-compact before V8 12.4 and minor mark-sweep since (the same
/// versions that pass timestamps to the pause functions).
pub fn collector_name(collector: Option<u32>, v8_12_4_or_later: bool) -> &'static str {
    match collector {
        Some(0) => "Scavenge",
        Some(1) => "Mark-Compact",
        Some(2) if v8_12_4_or_later => "Minor Mark-Sweep",
        Some(2) => "Minor Mark-Compact",
        _ => "GC",
    }
}

/// V8's `GarbageCollectionReason` (never renumbered), worded like
/// `--trace-gc`.
pub fn reason_name(reason: Option<u32>) -> &'static str {
    const NAMES: [&str; 28] = [
        "unknown",
        "allocation failure",
        "allocation limit",
        "context disposal",
        "counters extension",
        "debugger",
        "deserialize",
        "external memory pressure",
        "finalize marking via stack guard",
        "finalize marking via task",
        "full hash-table",
        "heap profiler",
        "task",
        "last resort",
        "low memory notification",
        "make heap iterable",
        "memory pressure",
        "memory reducer",
        "runtime",
        "sampling profiler",
        "snapshot creator",
        "testing",
        "external finalize",
        "global allocation limit",
        "measure memory",
        "background allocation failure",
        "finalize concurrent minor mark-sweep",
        "cpp heap allocation failure",
    ];
    reason.and_then(|r| NAMES.get(r as usize)).copied().unwrap_or("unknown")
}

/// Pause durations from 1 µs to 10 min, 2 significant figures: enough to
/// tell 0.51 ms from 0.52 ms, in a few KiB per process.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 600_000_000_000, 2).expect("static histogram bounds are valid")
}

/// Per-process GC figures.
///
/// The histograms (about 30 KiB each) are made on the first pause of their
/// kind, so the many processes of a host-wide trace that never GC cost
/// nothing.
#[derive(Default)]
pub struct GcStats {
    minor: Option<Box<Histogram<u64>>>,
    major: Option<Box<Histogram<u64>>>,
    pub count: u64,
    pub total_pause_ns: u64,
    pub heap_after_last_major: Option<u64>,
    /// Heap used after the latest pause of any kind.
    pub heap_last: Option<u64>,
    pub reclaimed_bytes: u64,
}

/// Quantiles of one kind, in ms.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PauseQuantiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl GcStats {
    pub fn record(&mut self, pause: &GcPause) {
        let kind = GcKind::of(pause.collector);
        let slot = if kind == GcKind::Major { &mut self.major } else { &mut self.minor };
        let histogram = slot.get_or_insert_with(|| Box::new(new_histogram()));
        // Clamped into the histogram's range rather than failing: an
        // outlier is still counted.
        histogram.saturating_record(pause.pause_ns.max(1_000));
        self.count += 1;
        self.total_pause_ns += pause.pause_ns;
        if kind == GcKind::Major && pause.heap_after > 0 {
            self.heap_after_last_major = Some(pause.heap_after);
        }
        if pause.heap_after > 0 {
            self.heap_last = Some(pause.heap_after);
        }
        self.reclaimed_bytes += pause.heap_before.saturating_sub(pause.heap_after);
    }

    pub fn quantiles(&self, kind: GcKind) -> PauseQuantiles {
        let ms = |ns: u64| ns as f64 / 1e6;
        let Some(h) = (if kind == GcKind::Major { &self.major } else { &self.minor }) else {
            return PauseQuantiles { count: 0, p50_ms: 0.0, p90_ms: 0.0, p99_ms: 0.0, max_ms: 0.0 };
        };
        PauseQuantiles {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pause(collector: u32, pause_ns: u64, before: u64, after: u64) -> GcPause {
        GcPause {
            pause_ns,
            heap_before: before,
            heap_after: after,
            collector: Some(collector),
            reason: Some(1),
            v8_timestamps: true,
            marking_steps: 0,
            marking_step_ns: 0,
            marking_start_ns: 0,
            heap: 0,
        }
    }

    #[test]
    fn kinds_and_names() {
        assert_eq!(GcKind::of(Some(0)), GcKind::Minor);
        assert_eq!(GcKind::of(Some(2)), GcKind::Minor);
        assert_eq!(GcKind::of(Some(1)), GcKind::Major);
        assert_eq!(GcKind::of(None), GcKind::Unknown);
        assert_eq!(collector_name(Some(2), true), "Minor Mark-Sweep");
        assert_eq!(collector_name(Some(2), false), "Minor Mark-Compact");
        assert_eq!(reason_name(Some(1)), "allocation failure");
        assert_eq!(reason_name(Some(9)), "finalize marking via task");
        assert_eq!(reason_name(Some(21)), "testing");
        assert_eq!(reason_name(Some(999)), "unknown");
        assert_eq!(reason_name(None), "unknown");
    }

    #[test]
    fn aggregates() {
        let mut s = GcStats::default();
        for i in 0..100 {
            s.record(&pause(0, (i + 1) * 10_000, 10 << 20, 8 << 20));
        }
        s.record(&pause(1, 5_000_000, 30 << 20, 12 << 20));
        assert_eq!(s.count, 101);
        assert_eq!(s.heap_after_last_major, Some(12 << 20));
        assert_eq!(s.reclaimed_bytes, 100 * (2 << 20) + (18 << 20));
        let minor = s.quantiles(GcKind::Minor);
        assert_eq!(minor.count, 100);
        assert!((minor.p50_ms - 0.5).abs() < 0.01, "{minor:?}");
        assert!((minor.max_ms - 1.0).abs() < 0.01, "{minor:?}");
        let major = s.quantiles(GcKind::Major);
        assert_eq!(major.count, 1);
        assert!((major.max_ms - 5.0).abs() < 0.05);
    }
}
