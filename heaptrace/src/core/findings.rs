//! Findings: what a process's memory did, in words a person can act on.

use super::{
    record::{DeathCause, ProcessSummary},
    verdict::{LimitKind, MemoryKind, Verdict, VerdictState},
};
use crate::units::{fmt_bytes, fmt_delta, fmt_duration, fmt_size_class};

/// The answer, in words for someone who knows nothing of V8: is it a leak,
/// in which memory, how fast, what it runs into and when, and how it died.
pub fn answer(s: &ProcessSummary, death: Option<&str>) -> String {
    let who = format!("pid {} ({})", s.pid, s.comm);
    let v = &s.verdict;
    let rate = v.slope_bytes_per_s.map_or(String::new(), |r| format!("{} per minute", fmt_bytes(r * 60.0)));
    let basis = v.basis.map_or(String::new(), |b| match b.source {
        super::verdict::BasisSource::MajorGcs => {
            format!(" (steadily: over {} full garbage collections in {:.0} s)", b.points, b.span_s)
        }
        super::verdict::BasisSource::Samples => format!(" (steadily, over {:.0} s)", b.span_s),
    });
    let mut text = match (v.state, v.memory) {
        (VerdictState::Leak, Some(MemoryKind::JsHeap)) => format!(
            "{who} leaks memory in its JavaScript heap: what stays in use after each full garbage collection grows by {rate}{basis}."
        ),
        (VerdictState::Leak, Some(MemoryKind::Native)) => format!(
            "{who} leaks native memory (outside the JavaScript heap: Buffers, malloc, addons): it grows by {rate}{basis}, while the JavaScript heap stays level."
        ),
        (VerdictState::Leak, _) => format!(
            "{who} leaks memory both in its JavaScript heap and outside it (Buffers, malloc): together {rate}{basis}."
        ),
        (VerdictState::GcThrashing, _) => format!(
            "{who} spends most of its time in garbage collection and frees almost nothing: its JavaScript heap is full."
        ),
        (VerdictState::Growing, m) => format!(
            "{who}'s {} memory is growing ({rate}), but not yet steadily enough to call it a leak.",
            match m {
                Some(MemoryKind::JsHeap) => "JavaScript heap",
                Some(MemoryKind::Native) => "native",
                _ => "",
            }
        )
        .replace("'s  memory", "'s memory"),
        (VerdictState::Steady, _) => match s.gc.as_ref().and_then(|g| g.heap_after_last_major_bytes) {
            Some(floor) => format!(
                "{who}'s memory is steady: the garbage collector keeps up (the JavaScript heap falls back to {} after each full collection) and native memory holds level.",
                fmt_bytes(floor as f64)
            ),
            None => format!("{who}'s memory is steady."),
        },
        (VerdictState::Unknown, _) => format!(
            "{who}: not enough data yet to tell a leak from normal use (traced {:.0} s; a verdict needs a few full garbage collections, or 30 s of samples).",
            s.traced_s
        ),
    };
    if let Some(site) = &v.site
        && matches!(v.state, VerdictState::Leak | VerdictState::Growing)
    {
        text += &format!(
            " Most of the growth ({:.0} %) was allocated in {}.",
            site.share * 100.0,
            site.frame.label()
        );
    }
    text += &forecast(v);
    if let Some(how) = death {
        text += &format!(" It died: {how}");
    }
    text
}

/// "At this rate it reaches ... in ...", when there is a forecast.
fn forecast(v: &Verdict) -> String {
    match (v.time_to_limit_s, v.limit, v.limit_bytes) {
        (Some(t), Some(LimitKind::V8Heap), Some(bytes)) if t <= 0.0 => format!(
            " It is at V8's heap limit ({}): expect \"JavaScript heap out of memory\" any moment.",
            fmt_bytes(bytes as f64)
        ),
        (Some(t), Some(LimitKind::V8Heap), Some(bytes)) => format!(
            " At this rate it reaches V8's heap limit ({}) in about {}, and then dies with \"JavaScript heap \
             out of memory\".",
            fmt_bytes(bytes as f64),
            fmt_duration(t)
        ),
        (Some(t), Some(LimitKind::Cgroup), Some(bytes)) => format!(
            " At this rate its container (cgroup) reaches its memory limit ({}) in about {}, and the kernel's \
             OOM killer ends it.",
            fmt_bytes(bytes as f64),
            fmt_duration(t)
        ),
        _ => String::new(),
    }
}

/// How a process died, in words.
pub fn death_words(cause: DeathCause) -> &'static str {
    match cause {
        DeathCause::V8Oom => "V8 ran out of JavaScript heap and aborted it.",
        DeathCause::OomKill => "the kernel's OOM killer ended it.",
        DeathCause::Signal => "a signal ended it.",
    }
}

/// One sentence: how much RSS moved, and where it went.
pub fn finding(s: &ProcessSummary, committed_anon_growth: i64) -> String {
    let rss = s.rss_growth_bytes;
    let noise = (1 << 20).max(s.rss_start_bytes as i64 / 100);
    let mut text = if rss.abs() < noise {
        format!(
            "RSS steady at {} ({} over {:.0} s).",
            fmt_bytes(s.rss_end_bytes as f64),
            fmt_delta(rss),
            s.traced_s
        )
    } else {
        format!(
            "RSS {} {} in {:.0} s ({}/s): anon {}, file {}, shmem {}.",
            if rss > 0 { "grew" } else { "shrank" },
            fmt_bytes(rss.unsigned_abs() as f64),
            s.traced_s,
            fmt_delta(s.rss_growth_bytes_per_s as i64),
            fmt_delta(s.rss_anon_growth_bytes),
            fmt_delta(s.rss_file_growth_bytes),
            fmt_delta(s.rss_shmem_growth_bytes),
        )
    };

    let mut parts = Vec::new();
    if committed_anon_growth.abs() >= noise {
        let mut part = format!("committed anonymous mmap memory {}", fmt_delta(committed_anon_growth));
        if let Some(top) = s
            .growth_by_chunk_size
            .first()
            .filter(|g| g.committed_delta_bytes.signum() == committed_anon_growth.signum())
        {
            part += &format!(
                ", mostly in {} chunks ({} {})",
                fmt_size_class(top.chunk_size_bytes),
                if top.chunks_delta >= 0 { "+" } else { "" }.to_owned() + &top.chunks_delta.to_string(),
                if top.chunks_delta.abs() == 1 { "chunk" } else { "chunks" },
            );
        }
        parts.push((committed_anon_growth.abs(), part));
    }
    if s.mapped_file_growth_bytes.abs() >= noise {
        parts.push((
            s.mapped_file_growth_bytes.abs(),
            format!("file mappings {}", fmt_delta(s.mapped_file_growth_bytes)),
        ));
    }
    if s.brk_growth_bytes.abs() >= noise {
        parts.push((
            s.brk_growth_bytes.abs(),
            format!("brk heap (malloc's main arena) {}", fmt_delta(s.brk_growth_bytes)),
        ));
    }
    parts.sort_by_key(|(size, _)| std::cmp::Reverse(*size));
    if !parts.is_empty() {
        let joined: Vec<String> = parts.into_iter().map(|(_, p)| p).collect();
        let mut sentence = joined.join("; ");
        if let Some(first) = sentence.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        text += &format!(" {sentence}.");
    } else if rss >= noise {
        text += " No matching growth in mappings: pages were touched in memory that was already mapped \
                 (a heap filling space it had reserved).";
    }
    if s.v8_out_of_memory {
        text += " V8 ran out of heap (JavaScript heap out of memory) and aborted it.";
    }
    if s.oom_killed {
        text += " The kernel OOM killer ended it.";
    }
    text
}
