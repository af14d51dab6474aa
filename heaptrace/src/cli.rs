//! Command-line flags, parsed in two stages: clap turns text into typed
//! values ([`Cli`]); [`Config::from_cli`] checks how they fit together.

use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::{kernel::MemHookChoice, units};

/// Shortest sampling interval: below this, /proc reads start to cost.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

#[derive(Debug, Parser)]
#[command(
    name = "heaptrace",
    version,
    about = "Trace why a running process's memory grows, live, with eBPF (no restart, no flags).",
    after_help = "Examples:\n  sudo heaptrace --pid 4242\n  sudo heaptrace --pid 4242 --duration 30s -o json > trace.jsonl"
)]
pub struct Cli {
    /// Process to trace (repeat for several).
    #[arg(short, long = "pid", value_name = "PID", required = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub pids: Vec<u32>,

    /// Stop after this long (e.g. 30s, 5m). Default: until Ctrl-C or until
    /// every traced process has exited.
    #[arg(short, long, value_name = "DURATION", value_parser = units::parse_duration)]
    pub duration: Option<Duration>,

    /// Time between snapshots.
    #[arg(short, long, value_name = "DURATION", default_value = "1s", value_parser = units::parse_duration)]
    pub interval: Duration,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Report every mmap, mremap or munmap at least this large.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = units::parse_size)]
    pub large_threshold: u64,

    /// How to hook memory syscalls. `auto` takes the cheapest this kernel allows.
    #[arg(long, value_enum, default_value_t = MemHookChoice::Auto)]
    pub mem_hook: MemHookChoice,

    /// Size of the kernel-to-collector ring buffer (a power of two, at least
    /// one page). Events that do not fit are counted and reported.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = units::parse_size)]
    pub ring_buffer: u64,

    /// Say how tracing was set up (hooks, kernel notes) on stderr.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Readable lines and a summary.
    Text,
    /// JSON Lines, one object per record (docs/json-output.md).
    Json,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub pids: Vec<u32>,
    pub duration: Option<Duration>,
    pub interval: Duration,
    pub output: OutputFormat,
    pub large_threshold: u64,
    pub mem_hook: MemHookChoice,
    pub ring_buffer_bytes: u32,
    pub verbose: bool,
}

impl Config {
    pub fn from_cli(cli: Cli) -> Result<Self, String> {
        if cli.interval < MIN_INTERVAL {
            return Err(format!("--interval must be at least {}", humantime::format_duration(MIN_INTERVAL)));
        }
        if cli.large_threshold == 0 {
            return Err("--large-threshold must be greater than zero".into());
        }
        let page = crate::clock::page_size();
        let ring_buffer_bytes = u32::try_from(cli.ring_buffer)
            .ok()
            .filter(|&b| b.is_power_of_two() && u64::from(b) >= page)
            .ok_or_else(|| format!("--ring-buffer must be a power of two from {page} bytes to 2GiB"))?;
        let mut pids = cli.pids;
        pids.sort_unstable();
        pids.dedup();
        Ok(Self {
            pids,
            duration: cli.duration,
            interval: cli.interval,
            output: cli.output,
            large_threshold: cli.large_threshold,
            mem_hook: cli.mem_hook,
            ring_buffer_bytes,
            verbose: cli.verbose,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("heaptrace").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Config::from_cli(cli)
    }

    #[test]
    fn defaults() {
        let c = parse(&["--pid", "42"]).unwrap();
        assert_eq!(c.pids, vec![42]);
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(c.duration, None);
        assert_eq!(c.large_threshold, 1 << 20);
        assert_eq!(c.output, OutputFormat::Text);
        assert_eq!(c.mem_hook, MemHookChoice::Auto);
    }

    #[test]
    fn several_pids_and_options() {
        let c = parse(&[
            "-p",
            "3",
            "-p",
            "2",
            "--pid",
            "3",
            "-d",
            "30s",
            "-i",
            "250ms",
            "-o",
            "json",
            "--large-threshold",
            "512k",
        ])
        .unwrap();
        assert_eq!(c.pids, vec![2, 3]);
        assert_eq!(c.duration, Some(Duration::from_secs(30)));
        assert_eq!(c.interval, Duration::from_millis(250));
        assert_eq!(c.output, OutputFormat::Json);
        assert_eq!(c.large_threshold, 512 << 10);
    }

    #[test]
    fn bad_values_name_the_flag_and_what_was_expected() {
        let e = parse(&["--pid", "1", "--duration", "soon"]).unwrap_err();
        assert!(e.contains("--duration") && e.contains("expected e.g. 30s"), "{e}");
        let e = parse(&["--pid", "1", "--large-threshold", "huge"]).unwrap_err();
        assert!(e.contains("--large-threshold") && e.contains("1MiB"), "{e}");
        let e = parse(&["--pid", "0"]).unwrap_err();
        assert!(e.contains("--pid"), "{e}");
        let e = parse(&["--pid", "abc"]).unwrap_err();
        assert!(e.contains("--pid"), "{e}");
        assert!(parse(&[]).unwrap_err().contains("--pid"));
        assert!(
            parse(&["--pid", "1", "-i", "1ms"]).unwrap_err().contains("--interval must be at least 10ms")
        );
        assert!(parse(&["--pid", "1", "--duration", "0s"]).unwrap_err().contains("greater than zero"));
        assert!(parse(&["--pid", "1", "--ring-buffer", "3MiB"]).unwrap_err().contains("power of two"));
        assert!(parse(&["--pid", "1", "--ring-buffer", "1k"]).unwrap_err().contains("power of two"));
        assert_eq!(parse(&["--pid", "1", "--ring-buffer", "4KiB"]).unwrap().ring_buffer_bytes, 4096);
    }
}
