//! Parsing and printing of sizes and durations, shared by the CLI and the
//! outputs. Pure functions.

use std::time::Duration;

/// Parses a size such as `1MiB`, `512k`, `4096`. Bare suffixes are binary
/// (`1M` = 1 MiB), since memory people think in pages.
pub fn parse_size(text: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(text.trim())
        .map_err(|e| format!("invalid size {text:?} ({e}); expected e.g. 1MiB, 512k or 4096"))
}

/// Parses a duration such as `30s`, `1m`, `250ms`, `1h 30m`. Zero is refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?} ({e}); expected e.g. 30s, 1m or 250ms"))?;
    if d.is_zero() {
        return Err(format!("invalid duration {text:?}: must be greater than zero"));
    }
    Ok(d)
}

/// `1.5 MiB`, `312 B`, `-2.0 GiB`: binary units, one decimal.
pub fn fmt_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    let sign = if bytes < 0.0 { "-" } else { "" };
    let mut v = bytes.abs();
    if v < 1024.0 {
        return format!("{sign}{v:.0} B");
    }
    let mut unit = "B";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{sign}{v:.1} {unit}")
}

/// Like [`fmt_bytes`] with an explicit `+` for growth.
pub fn fmt_delta(bytes: i64) -> String {
    if bytes >= 0 { format!("+{}", fmt_bytes(bytes as f64)) } else { fmt_bytes(bytes as f64) }
}

/// A forecast's time in words: `45 s`, `12 min`, `3 h 20 min`, `2.5 days`.
pub fn fmt_duration(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 3600.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 48.0 * 3600.0 {
        let h = (s / 3600.0).floor();
        format!("{h:.0} h {:.0} min", (s - h * 3600.0) / 60.0)
    } else {
        format!("{:.1} days", s / 86400.0)
    }
}

/// A power-of-two size class label: `256 KiB`, `16 MiB`.
pub fn fmt_size_class(bytes: u64) -> String {
    fmt_bytes(bytes as f64).replace(".0 ", " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size(" 4096 "), Ok(4096));
        assert!(parse_size("lots").unwrap_err().contains("expected e.g."));
        assert!(parse_size("-1M").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("0s").unwrap_err().contains("greater than zero"));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("30").is_err());
    }

    #[test]
    fn printing() {
        assert_eq!(fmt_bytes(312.0), "312 B");
        assert_eq!(fmt_bytes(1536.0), "1.5 KiB");
        assert_eq!(fmt_bytes(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB");
        assert_eq!(fmt_delta(-(2 << 20)), "-2.0 MiB");
        assert_eq!(fmt_delta(0), "+0 B");
        assert_eq!(fmt_size_class(256 << 10), "256 KiB");
    }
}
