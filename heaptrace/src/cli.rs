//! Command-line flags, parsed in two stages: clap turns text into typed
//! values ([`Cli`]); [`Config::from_cli`] checks how they fit together.

use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::{
    kernel::MemHookChoice,
    target::select::{COMM_MAX, Selection},
    units,
};

/// Shortest sampling interval: below this, /proc reads start to cost.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

#[derive(Debug, Parser)]
#[command(
    name = "heaptrace",
    version,
    about = "Trace why a running process's memory grows, live, with eBPF (no restart, no flags).",
    after_help = "Examples:\n  sudo heaptrace --pid 4242\n  sudo heaptrace agent                  # Prometheus metrics for every node process (heaptrace agent --help)\n  sudo heaptrace --comm node            # every node process, including ones started later\n  sudo heaptrace --container 3f4e1d2c   # one container, by id prefix\n  sudo heaptrace --all -o json > host.jsonl\n\n--comm and --container/--cgroup combine like pgrep's options (all must match);\nrepeating one flag gives alternatives; --pid adds processes outright."
)]
#[command(group(clap::ArgGroup::new("selection").required(true).multiple(true).args(["pids", "all", "comms", "containers", "cgroups"])))]
pub struct Cli {
    /// Process to trace (repeat for several).
    #[arg(short, long = "pid", value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub pids: Vec<u32>,

    /// Trace every process on the host, including ones started later.
    #[arg(short = 'a', long, conflicts_with_all = ["comms", "containers", "cgroups"])]
    pub all: bool,

    /// Trace processes with this command name (as in `ps -o comm`), from
    /// exec on, including ones started later (repeat for several).
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,

    /// Trace the processes of a container, by id or id prefix (docker,
    /// containerd, CRI-O, podman; repeat for several).
    #[arg(long = "container", value_name = "ID")]
    pub containers: Vec<String>,

    /// Trace the processes of a cgroup and its descendants: a path in the
    /// v2 hierarchy, as in /proc/PID/cgroup (e.g. /kubepods.slice/...).
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<String>,

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
    pub selection: Selection,
    pub duration: Option<Duration>,
    pub interval: Duration,
    pub output: OutputFormat,
    pub large_threshold: u64,
    pub mem_hook: MemHookChoice,
    pub ring_buffer_bytes: u32,
    pub verbose: bool,
    /// How often the ring buffer is drained when the kernel does not wake
    /// the collector (frequent events are submitted without wakeups). The
    /// CLI's 20 ms keeps its event lines prompt; the agent, whose output is
    /// scraped every few seconds, wakes less.
    pub drain_every: Duration,
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
        for comm in &cli.comms {
            if comm.is_empty() || comm.contains('/') {
                return Err(format!("--comm {comm:?}: expected a command name such as node (not a path)"));
            }
            if comm.len() > COMM_MAX {
                return Err(format!(
                    "--comm {comm:?}: the kernel keeps only the first {COMM_MAX} bytes of a command name; \
                     use --comm {:?}",
                    String::from_utf8_lossy(&comm.as_bytes()[..COMM_MAX])
                ));
            }
        }
        let mut containers = Vec::new();
        for id in &cli.containers {
            let id = id.to_ascii_lowercase();
            if id.len() < 4 || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "--container {id:?}: expected a container id or a prefix of at least 4 hex digits \
                     (as `docker ps` or `crictl ps` show)"
                ));
            }
            containers.push(id);
        }
        let mut cgroups = Vec::new();
        for path in &cli.cgroups {
            cgroups.push(normalize_cgroup(path)?);
        }
        let selection = Selection { pids, all: cli.all, comms: cli.comms, containers, cgroups };
        Ok(Self {
            selection,
            duration: cli.duration,
            interval: cli.interval,
            output: cli.output,
            large_threshold: cli.large_threshold,
            mem_hook: cli.mem_hook,
            ring_buffer_bytes,
            verbose: cli.verbose,
            drain_every: Duration::from_millis(20),
        })
    }
}

/// A `--cgroup` value as a v2 path ("/a/b"): given as in /proc/PID/cgroup
/// or as a directory under the v2 mount. It must exist.
fn normalize_cgroup(given: &str) -> Result<String, String> {
    let root = crate::target::cgroup::v2_root()
        .ok_or_else(|| "--cgroup: this host has no cgroup v2 hierarchy mounted".to_owned())?;
    let rel = std::path::Path::new(given).strip_prefix(root).map(|p| p.to_string_lossy().into_owned());
    let rel = rel.unwrap_or_else(|_| given.to_owned());
    let path = format!("/{}", rel.trim_matches('/'));
    if !root.join(path.trim_start_matches('/')).is_dir() {
        return Err(format!(
            "--cgroup {given}: no such cgroup under {} (see the 0:: line of /proc/PID/cgroup)",
            root.display()
        ));
    }
    Ok(path)
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
        assert_eq!(c.selection.pids, vec![42]);
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
        assert_eq!(c.selection.pids, vec![2, 3]);
        assert_eq!(c.duration, Some(Duration::from_secs(30)));
        assert_eq!(c.interval, Duration::from_millis(250));
        assert_eq!(c.output, OutputFormat::Json);
        assert_eq!(c.large_threshold, 512 << 10);
    }

    #[test]
    fn selections() {
        let c = parse(&["--comm", "node", "--container", "ABCDEF12", "-p", "7"]).unwrap();
        assert_eq!(c.selection.comms, vec!["node"]);
        assert_eq!(c.selection.containers, vec!["abcdef12"]);
        assert_eq!(c.selection.pids, vec![7]);
        assert!(c.selection.follows());
        assert!(parse(&["--all"]).unwrap().selection.all);
        // Every host heaptrace supports mounts cgroup v2 (hybrid hosts too).
        assert!(crate::target::cgroup::v2_root().is_some(), "no cgroup v2 hierarchy mounted");
        assert_eq!(parse(&["--cgroup", "/"]).unwrap().selection.cgroups, vec!["/"]);
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
        assert!(parse(&["--comm", "node", "--all"]).unwrap_err().contains("cannot be used with"));
        assert!(parse(&["--comm", "/usr/bin/node"]).unwrap_err().contains("not a path"));
        assert!(
            parse(&["--comm", "a-very-long-command"]).unwrap_err().contains("use --comm \"a-very-long-com\"")
        );
        assert!(parse(&["--container", "xyz!"]).unwrap_err().contains("hex digits"));
        assert!(parse(&["--container", "abc"]).unwrap_err().contains("at least 4"));
        assert!(parse(&["--cgroup", "/no/such/cgroup/here"]).unwrap_err().contains("no such cgroup"));
        assert!(
            parse(&["--pid", "1", "-i", "1ms"]).unwrap_err().contains("--interval must be at least 10ms")
        );
        assert!(parse(&["--pid", "1", "--duration", "0s"]).unwrap_err().contains("greater than zero"));
        assert!(parse(&["--pid", "1", "--ring-buffer", "3MiB"]).unwrap_err().contains("power of two"));
        assert!(parse(&["--pid", "1", "--ring-buffer", "1k"]).unwrap_err().contains("power of two"));
        assert_eq!(parse(&["--pid", "1", "--ring-buffer", "4KiB"]).unwrap().ring_buffer_bytes, 4096);
    }
}
