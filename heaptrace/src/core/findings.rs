//! Findings: what a process's memory did, in words a person can act on.

use super::record::ProcessSummary;
use crate::units::{fmt_bytes, fmt_delta, fmt_size_class};

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
