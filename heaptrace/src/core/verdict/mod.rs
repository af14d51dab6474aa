//! Leak or seesaw: the verdict on a process's or a group's memory.
//!
//! A healthy JS heap saws: used memory climbs and falls back at each major
//! GC. A leak raises the *floor*, the heap used right after each major GC,
//! which the GC probes measure exactly. Native memory (malloc, Buffers,
//! addons) has no GC floor: it is judged from the committed memory
//! outside V8's heap chunks, sampled every second.
//!
//! **The rules**, for each series (the floor, or native memory) over its
//! window ([`FLOOR_WINDOW_S`], [`NATIVE_WINDOW_S`]):
//! - **leak:** a straight line explains the series well (R² ≥ 0.8 for the
//!   floor, ≥ 0.95 for native memory: see [`NATIVE_LEAK_R2`]), it
//!   rises at least [`MIN_JS_SLOPE`] (JS) or [`MIN_NATIVE_SLOPE`] (native)
//!   per second and by at least [`MIN_RISE`] in all, it rests on at least
//!   [`MIN_MAJORS`] major GCs (or [`MIN_SAMPLES`] samples) spanning
//!   [`MIN_SPAN_S`] seconds, and the rise is **sustained**: the later half
//!   of the window alone rises at least half as fast as the whole.
//!   *That last rule is what keeps a spike from reading as a leak*: a big
//!   request, a cache warming up or a deploy rises and then stops (or
//!   falls back), so the later half is flat; such a series reads
//!   `growing`, then `steady` once the rise has left the window.
//! - **growing:** it rises clearly (slope above the minimum, R² ≥ 0.5) but
//!   not with all the evidence of a leak.
//! - **gc-thrashing:** at least half of the last [`THRASH_WINDOW_S`]
//!   seconds were spent in GC pauses and the latest major GCs reclaimed
//!   less than a tenth of the heap: V8's "ineffective mark-compacts near
//!   heap limit", the state before "JavaScript heap out of memory".
//! - **steady:** enough evidence, and none of the above.
//! - **unknown:** not enough evidence yet.
//!
//! Once a verdict is `leak`, it stays so while the fit holds at half the
//! thresholds (R² ≥ 0.6): hysteresis, so a verdict does not flap.

mod fit;
mod types;

use std::collections::VecDeque;

pub use fit::{Fit, fit};
pub use types::*;

use crate::units::{fmt_bytes, fmt_duration};

/// Major GCs kept for the floor: the last ten minutes, at most 64.
pub const FLOOR_WINDOW_S: f64 = 600.0;
const FLOOR_POINTS: usize = 64;
/// Memory samples kept: the last five minutes, one per second.
pub const NATIVE_WINDOW_S: f64 = 300.0;
const SAMPLE_POINTS: usize = 300;
/// Slopes below these are flat: 0.25 MiB/min for the JS floor (exact,
/// GC by GC), 3 MiB/min for native memory, which moves in steps of
/// malloc's arenas and V8's compiler zones: steady workloads were seen to
/// drift up to about 1 MiB/min over minutes (workloads/diagnosis).
pub const MIN_JS_SLOPE: f64 = 0.25 * 1048576.0 / 60.0;
pub const MIN_NATIVE_SLOPE: f64 = 3.0 * 1048576.0 / 60.0;
/// The least rise over the window that can be a leak.
pub const MIN_RISE: f64 = 2.0 * 1048576.0;
pub const MIN_MAJORS: usize = 4;
pub const MIN_SAMPLES: usize = 30;
pub const MIN_SPAN_S: f64 = 40.0;
const LEAK_R2: f64 = 0.8;
/// Native memory moves in steps (malloc's arenas, V8's code space and
/// compiler zones) and a process warming up climbs a few of them in its
/// first minute: such a climb fitted R² 0.74-0.83 at 40 s on quiet runs,
/// and once, on a loaded host, passed 0.8 with its later half still rising
/// (churn-server.js called a native leak at 41 s, then growing at 47 s).
/// A Buffer leak fits a line far better: buffer-leak.js's native series had
/// R² 0.994 at 38 s and above after. A noisier native leak is called
/// `growing` until its window makes the line plain.
const NATIVE_LEAK_R2: f64 = 0.95;
const KEEP_LEAK_R2: f64 = 0.6;
const GROWING_R2: f64 = 0.5;
pub const THRASH_WINDOW_S: f64 = 20.0;
pub const THRASH_MIN_S: f64 = 2.0;
const THRASH_SHARE: f64 = 0.5;
const THRASH_RECLAIMED: f64 = 0.1;

/// A series kept over a time window, oldest first.
#[derive(Clone, Debug)]
struct Series {
    points: VecDeque<(f64, f64)>,
    window_s: f64,
    max_points: usize,
}

impl Series {
    fn new(window_s: f64, max_points: usize) -> Self {
        Self { points: VecDeque::new(), window_s, max_points }
    }

    fn push(&mut self, t: f64, y: f64) {
        self.points.push_back((t, y));
        while self.points.len() > self.max_points
            || self.points.front().is_some_and(|&(t0, _)| t0 < t - self.window_s)
        {
            self.points.pop_front();
        }
    }

    fn fit(&self) -> Option<Fit> {
        fit(self.points.iter())
    }

    /// The fit of the later half of the window (by time).
    fn later_half(&self) -> Option<Fit> {
        let (first, last) = (self.points.front()?.0, self.points.back()?.0);
        let mid = (first + last) / 2.0;
        fit(self.points.iter().filter(|(t, _)| *t >= mid))
    }
}

/// What one process's verdict rests on. Bounded: a few hundred points.
#[derive(Clone, Debug)]
pub struct Evidence {
    /// Heap used after each major GC of the main isolate.
    floor: Series,
    /// Committed memory outside V8's heap chunks, per sample.
    native: Series,
    /// Resident anonymous memory per sample (for the cgroup forecast).
    rss: Series,
    /// GC pauses of the last [`THRASH_WINDOW_S`]: (end, length) in seconds.
    pauses: VecDeque<(f64, f64)>,
    /// Share of the heap the latest major GCs reclaimed.
    reclaimed: VecDeque<f64>,
    /// When the first GC seen began, seconds.
    first_gc: Option<f64>,
}

impl Default for Evidence {
    fn default() -> Self {
        Self {
            floor: Series::new(FLOOR_WINDOW_S, FLOOR_POINTS),
            native: Series::new(NATIVE_WINDOW_S, SAMPLE_POINTS),
            rss: Series::new(NATIVE_WINDOW_S, SAMPLE_POINTS),
            pauses: VecDeque::new(),
            reclaimed: VecDeque::new(),
            first_gc: None,
        }
    }
}

impl Evidence {
    /// A GC pause starting at `t` (seconds); `major`: a mark-compact.
    pub fn gc(&mut self, t: f64, pause_s: f64, major: bool, heap_before: u64, heap_after: u64) {
        let end = t + pause_s;
        self.first_gc.get_or_insert(t);
        self.pauses.push_back((end, pause_s));
        while self.pauses.front().is_some_and(|&(e, _)| e < end - THRASH_WINDOW_S) {
            self.pauses.pop_front();
        }
        if major && heap_after > 0 {
            self.floor.push(end, heap_after as f64);
            let reclaimed = heap_before.saturating_sub(heap_after) as f64 / heap_before.max(1) as f64;
            self.reclaimed.push_back(reclaimed);
            if self.reclaimed.len() > 3 {
                self.reclaimed.pop_front();
            }
        }
    }

    /// A memory sample at `t` (seconds).
    pub fn sample(&mut self, t: f64, native: u64, rss_anon: u64) {
        self.native.push(t, native as f64);
        self.rss.push(t, rss_anon as f64);
    }

    fn majors(&self) -> usize {
        self.floor.points.len()
    }
}

/// The limits a process's memory runs into.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    /// V8's `heap_size_limit`.
    pub v8_heap: Option<u64>,
    /// The cgroup's usage and limit (memory.current, memory.max).
    pub cgroup: Option<(u64, u64)>,
}

/// How one series reads.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Trend {
    /// Not enough points or span.
    Unknown,
    Flat(Fit),
    Growing(Fit),
    Leak(Fit),
}

impl Trend {
    fn fit(self) -> Option<Fit> {
        match self {
            Trend::Unknown => None,
            Trend::Flat(f) | Trend::Growing(f) | Trend::Leak(f) => Some(f),
        }
    }
}

fn trend(series: &Series, min_points: usize, min_slope: f64, leak_r2: f64, was_leak: bool) -> Trend {
    let Some(f) = series.fit() else { return Trend::Unknown };
    if f.points < min_points.min(3) || f.span_s < MIN_SPAN_S / 2.0 {
        return Trend::Unknown;
    }
    let (r2_needed, slope_needed) =
        if was_leak { (KEEP_LEAK_R2, min_slope / 2.0) } else { (leak_r2, min_slope) };
    let sustained = series.later_half().is_some_and(|h| h.slope >= f.slope / 2.0);
    let enough = f.points >= min_points && f.span_s >= MIN_SPAN_S;
    if enough && f.slope >= slope_needed && f.r2 >= r2_needed && f.slope * f.span_s >= MIN_RISE && sustained {
        return Trend::Leak(f);
    }
    if f.slope >= min_slope && f.r2 >= GROWING_R2 {
        return Trend::Growing(f);
    }
    Trend::Flat(f)
}

/// Seconds in GC pauses over the thrashing window, as a share of it. A
/// process seen for less than the window is judged on the time it was
/// seen (at least [`THRASH_MIN_S`]): one that thrashes to death in three
/// seconds thrashed.
fn pause_share(e: &Evidence, now: f64) -> (f64, f64) {
    let seen = e.first_gc.map_or(0.0, |t| now - t);
    let window = seen.clamp(THRASH_MIN_S, THRASH_WINDOW_S);
    let paused: f64 = e.pauses.iter().filter(|(end, _)| *end >= now - window).map(|p| p.1).sum();
    (paused / window, window)
}

/// The verdict on one process at `now` (seconds, the clock of the
/// evidence). `v8`: it has GC probes (else only native memory is judged).
pub fn judge(e: &Evidence, now: f64, limits: Limits, previous: &Verdict, v8: bool) -> Verdict {
    let was_leak = previous.state == VerdictState::Leak;
    let was =
        |m: MemoryKind| was_leak && matches!(previous.memory, Some(p) if p == m || p == MemoryKind::Both);
    let js = if v8 {
        trend(&e.floor, MIN_MAJORS, MIN_JS_SLOPE, LEAK_R2, was(MemoryKind::JsHeap))
    } else {
        Trend::Unknown
    };
    let native = trend(&e.native, MIN_SAMPLES, MIN_NATIVE_SLOPE, NATIVE_LEAK_R2, was(MemoryKind::Native));

    let (share, window) = pause_share(e, now);
    let ineffective = e.reclaimed.len() >= 2 && e.reclaimed.iter().all(|&r| r < THRASH_RECLAIMED);
    if v8 && share >= THRASH_SHARE && ineffective {
        let mut v = verdict(VerdictState::GcThrashing, Some(MemoryKind::JsHeap), js.fit(), e, limits);
        v.evidence = format!(
            "GC thrashing: {:.0} % of the last {window:.0} s in GC pauses, and the last major GCs \
             reclaimed under {:.0} % of the heap: V8 is near its heap limit{}",
            share * 100.0,
            THRASH_RECLAIMED * 100.0,
            forecast_words(&v)
        );
        return v;
    }

    let (state, memory, fits): (VerdictState, Option<MemoryKind>, Vec<(MemoryKind, Fit)>) = match (js, native)
    {
        (Trend::Leak(j), Trend::Leak(n)) => (
            VerdictState::Leak,
            Some(MemoryKind::Both),
            vec![(MemoryKind::JsHeap, j), (MemoryKind::Native, n)],
        ),
        (Trend::Leak(j), _) => (VerdictState::Leak, Some(MemoryKind::JsHeap), vec![(MemoryKind::JsHeap, j)]),
        (_, Trend::Leak(n)) => (VerdictState::Leak, Some(MemoryKind::Native), vec![(MemoryKind::Native, n)]),
        (Trend::Growing(j), Trend::Growing(n)) => (
            VerdictState::Growing,
            Some(MemoryKind::Both),
            vec![(MemoryKind::JsHeap, j), (MemoryKind::Native, n)],
        ),
        (Trend::Growing(j), _) => {
            (VerdictState::Growing, Some(MemoryKind::JsHeap), vec![(MemoryKind::JsHeap, j)])
        }
        (_, Trend::Growing(n)) => {
            (VerdictState::Growing, Some(MemoryKind::Native), vec![(MemoryKind::Native, n)])
        }
        // Steady needs every judged series to have enough evidence.
        (Trend::Flat(j), Trend::Flat(n)) if v8 => (
            VerdictState::Steady,
            Some(MemoryKind::Both),
            vec![(MemoryKind::JsHeap, j), (MemoryKind::Native, n)],
        ),
        (_, Trend::Flat(n)) if !v8 => {
            (VerdictState::Steady, Some(MemoryKind::Native), vec![(MemoryKind::Native, n)])
        }
        _ => (VerdictState::Unknown, None, Vec::new()),
    };
    if state == VerdictState::Unknown {
        return Verdict::unknown(format!(
            "not enough evidence yet: {} major GCs and {} samples (a verdict needs {MIN_MAJORS} major GCs \
             or {MIN_SAMPLES} samples over {MIN_SPAN_S:.0} s)",
            e.majors(),
            e.native.points.len()
        ));
    }
    let combined = combine(&fits);
    let mut v = verdict(state, memory, combined, e, limits);
    v.evidence = words(state, &fits, &v, v8);
    v
}

/// One fit standing for several: slopes add up; the weaker evidence counts.
fn combine(fits: &[(MemoryKind, Fit)]) -> Option<Fit> {
    let mut it = fits.iter().map(|(_, f)| *f);
    let first = it.next()?;
    Some(it.fold(first, |a, b| Fit {
        slope: a.slope + b.slope,
        at_end: a.at_end + b.at_end,
        r2: a.r2.min(b.r2),
        points: a.points.min(b.points),
        span_s: a.span_s.min(b.span_s),
    }))
}

/// The verdict's figures and its forecast (words are set by the caller).
fn verdict(
    state: VerdictState,
    memory: Option<MemoryKind>,
    f: Option<Fit>,
    e: &Evidence,
    limits: Limits,
) -> Verdict {
    let source =
        if memory == Some(MemoryKind::Native) { BasisSource::Samples } else { BasisSource::MajorGcs };
    let basis = f.map(|f| Basis { source, points: f.points as u32, span_s: f.span_s, fit: f.r2 });
    let mut v = Verdict {
        state,
        memory,
        slope_bytes_per_s: f.map(|f| f.slope),
        basis,
        time_to_limit_s: None,
        limit: None,
        limit_bytes: None,
        evidence: String::new(),
        site: None,
    };
    if !matches!(state, VerdictState::Leak | VerdictState::Growing | VerdictState::GcThrashing) {
        return v;
    }
    let mut candidates: Vec<(f64, LimitKind, u64)> = Vec::new();
    // The JS heap against V8's limit: from the floor's line now.
    if let (Some(limit), Some(floor)) = (limits.v8_heap, e.floor.fit())
        && memory != Some(MemoryKind::Native)
        && (floor.slope > 0.0 || state == VerdictState::GcThrashing)
    {
        let room = (limit as f64 - floor.at_end).max(0.0);
        let t =
            if state == VerdictState::GcThrashing || floor.slope <= 0.0 { 0.0 } else { room / floor.slope };
        candidates.push((t, LimitKind::V8Heap, limit));
    }
    // The process's resident memory against its cgroup's room.
    if let (Some((usage, limit)), Some(rss)) = (limits.cgroup, e.rss.fit())
        && rss.slope > 0.0
    {
        candidates.push((limit.saturating_sub(usage) as f64 / rss.slope, LimitKind::Cgroup, limit));
    }
    if let Some((t, kind, bytes)) = candidates.into_iter().min_by(|a, b| a.0.total_cmp(&b.0)) {
        v.time_to_limit_s = Some(t);
        v.limit = Some(kind);
        v.limit_bytes = Some(bytes);
    }
    v
}

fn per_min(bytes_per_s: f64) -> String {
    let sign = if bytes_per_s >= 0.0 { "+" } else { "" };
    format!("{sign}{}/min", fmt_bytes(bytes_per_s * 60.0))
}

fn series_words(kind: MemoryKind, f: &Fit, v8: bool) -> String {
    match kind {
        MemoryKind::JsHeap => format!(
            "JS heap floor (heap after each major GC) {} over {} major GCs in {:.0} s (fit R² {:.2})",
            per_min(f.slope),
            f.points,
            f.span_s,
            f.r2
        ),
        _ => format!(
            "{} {} over {:.0} s (fit R² {:.2})",
            if v8 {
                "native memory (outside V8's heap)"
            } else {
                "memory (committed anonymous and brk heap)"
            },
            per_min(f.slope),
            f.span_s,
            f.r2
        ),
    }
}

fn forecast_words(v: &Verdict) -> String {
    match (v.time_to_limit_s, v.limit, v.limit_bytes) {
        (Some(t), Some(kind), Some(bytes)) => {
            let which = match kind {
                LimitKind::V8Heap => "V8's heap limit",
                LimitKind::Cgroup => "the cgroup's memory limit",
            };
            format!("; {which} ({}) in {}", fmt_bytes(bytes as f64), fmt_duration(t))
        }
        _ => String::new(),
    }
}

fn words(state: VerdictState, fits: &[(MemoryKind, Fit)], v: &Verdict, v8: bool) -> String {
    let parts: Vec<String> = fits.iter().map(|(k, f)| series_words(*k, f, v8)).collect();
    let head = match state {
        VerdictState::Leak => "leak",
        VerdictState::Growing => "growing, not (yet) a sustained leak",
        VerdictState::Steady => "steady",
        _ => state.name(),
    };
    format!("{head}: {}{}", parts.join("; "), forecast_words(v))
}

#[cfg(test)]
mod tests;
