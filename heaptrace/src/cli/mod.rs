//! Command-line flags, parsed in two stages: clap turns text into typed
//! values; [`config`] checks how they fit together.
//!
//! `heaptrace [trace] …` (the default: every command line without a
//! subcommand is a `trace`) and `heaptrace agent …` share one set of
//! selection flags ([`SelectionArgs`]) and one of tracing flags
//! ([`TracingArgs`]). The agent differs in defaults (a longer interval, a
//! smaller ring buffer) and gives every flag an environment variable,
//! `HEAPTRACE_<FLAG>`, for a DaemonSet's `env:`; [`command`] applies both
//! to the shared definitions, so they cannot drift apart. Subcommands to
//! come (`heaptrace heap`, `heaptrace report`) are variants of [`Command`].

mod config;
#[cfg(test)]
mod tests;

use std::{net::SocketAddr, time::Duration};

use clap::{Arg, ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
pub(crate) use config::output_file;
pub use config::{Config, OutputFormat, RecordTo, heap as heap_config};

use crate::{kernel::MemHookChoice, units};

const EXAMPLES: &str = "Examples:
  sudo heaptrace --pid 4242
  sudo heaptrace --comm node            # every node process, including ones started later
  sudo heaptrace --container 3f4e1d2c   # one container, by id prefix
  sudo heaptrace --all -o json > host.jsonl
  sudo heaptrace agent                  # Prometheus metrics for every node process
  sudo heaptrace heap 4242 --diff 30s   # what grew in the JS heap, and what holds it

--comm and --container/--cgroup combine like pgrep's options (all must match);
repeating one flag gives alternatives; --pid adds processes outright.";

#[derive(Debug, Parser)]
#[command(
    name = "heaptrace",
    version,
    about = "Trace why a running process's memory grows, live, with eBPF (no restart, no flags).",
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `heaptrace …` without a subcommand is `heaptrace trace …`.
    #[command(flatten)]
    pub trace: TraceArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace processes and print what their memory and GC do (the default).
    #[command(after_help = EXAMPLES)]
    Trace(TraceArgs),
    /// Trace Node.js processes host-wide and serve Prometheus metrics
    /// (/metrics), /healthz and /findings.
    #[command(after_help = "By default the agent traces processes named node (--comm node).\n\
                      Every flag has an environment variable, HEAPTRACE_<FLAG> (lists comma-separated).\n\
                      Example:\n  sudo heaptrace agent --listen 0.0.0.0:9464")]
    Agent(AgentArgs),
    /// What is in a node process's JS heap and what keeps it there, through
    /// node's inspector (opt-in: this one touches the process).
    #[command(after_help = HEAP_HELP)]
    Heap(HeapArgs),
    /// Replay a recording made with --record, on any machine: the records,
    /// verdicts and summary the live run printed.
    #[command(after_help = REPORT_HELP)]
    Report(ReportArgs),
}

const REPORT_HELP: &str = "A recording cut short (a crash, SIGKILL, --record-max) replays up to its last
complete chunk (about a second before the end), with a warning, and its summary is
made there.

Examples:
  sudo heaptrace --pid 4242 --record incident.htrec   # record while tracing (any output mode, the agent too)
  heaptrace report incident.htrec                     # what the live run printed
  heaptrace report incident.htrec -o json | jq 'select(.type == \"verdict\")'";

const HEAP_HELP: &str =
    "What it does to the process: sends it SIGUSR1, which makes node open its inspector on
127.0.0.1:9229 inside the process's own network namespace (node prints \"Debugger
listening on ...\" on its stderr); connects there; takes heap snapshots (each pauses the
process's JavaScript while V8 writes it, and needs memory inside it) or runs the
sampling heap profiler (no pause); then closes the inspector again. Refuses when it
cannot do that safely (not node, --disable-sigusr1, the permission model, an
application SIGUSR1 handler, a debugger already attached, the port taken).
Snapshots hold the process's data: they stay in memory unless --save is given.

Examples:
  sudo heaptrace heap 4242                 # classes by retained size, and what holds the top ones
  sudo heaptrace heap 4242 --diff 30s      # what grew between two snapshots 30 s apart
  sudo heaptrace heap 4242 --sample 30s    # which functions allocated what is still alive (no pause)";

impl Cli {
    /// The subcommand to run (`trace` when none was given).
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Trace(self.trace))
    }
}

/// Which processes to trace. `--comm` and the cgroup filters combine like
/// pgrep's options; `--pid` adds processes outright.
#[derive(Debug, Clone, Args)]
pub struct SelectionArgs {
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
}

/// How tracing runs. The defaults are `heaptrace trace`'s; the agent's are
/// set in [`command`].
#[derive(Debug, Clone, Args)]
pub struct TracingArgs {
    /// Time between snapshots (the agent: between samples of /proc and the
    /// cgroups).
    #[arg(short, long, value_name = "DURATION", default_value = "1s", value_parser = units::parse_duration)]
    pub interval: Duration,

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

    /// Say how tracing was set up (hooks, kernel notes, processes skipped)
    /// on stderr; in text output, show every GC and large mapping too.
    #[arg(short, long)]
    pub verbose: bool,

    /// Write one JSON file per process death (its last minutes of memory,
    /// its last GCs, its verdicts and large mappings) into this directory,
    /// as heaptrace-<pid>-<unix seconds>.json, readable only by root (mode
    /// 0600). Created if missing.
    #[arg(long, value_name = "DIR")]
    pub dump_dir: Option<std::path::PathBuf>,

    /// Record everything the collector learns to this file (mode 0600), a
    /// chunk a second: `heaptrace report FILE` replays it anywhere, even
    /// cut short by a crash.
    #[arg(long, value_name = "FILE")]
    pub record: Option<std::path::PathBuf>,

    /// Stop recording (with a warning; tracing goes on) when the file
    /// reaches this size.
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = units::parse_size, requires = "record")]
    pub record_max: u64,
}

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("selection").required(true).multiple(true).args(["pids", "all", "comms", "containers", "cgroups"])))]
pub struct TraceArgs {
    #[command(flatten)]
    pub select: SelectionArgs,

    /// Stop after this long (e.g. 30s, 5m). Default: until Ctrl-C or until
    /// every traced process has exited.
    #[arg(short, long, value_name = "DURATION", value_parser = units::parse_duration)]
    pub duration: Option<Duration>,

    /// Output format. Default: the live view when stdout is a terminal,
    /// else text.
    #[arg(short, long, value_enum)]
    pub output: Option<OutputFormat>,

    /// On a terminal, print text lines instead of the live full-screen view.
    #[arg(long)]
    pub no_tui: bool,

    /// Text output: print every GC pause and every large mapping as it
    /// happens (by default they are summed up per interval).
    #[arg(short, long)]
    pub events: bool,

    /// Do not capture allocation stacks (by default, every mmap or mprotect
    /// of writable memory at least --stack-min large, and every brk growth,
    /// gets its user stack, named with its JS functions).
    #[arg(long)]
    pub no_stacks: bool,

    /// Smallest mmap or mprotect that gets a stack.
    #[arg(long, value_name = "SIZE", default_value = "64KiB", value_parser = units::parse_size)]
    pub stack_min: u64,

    /// At the end, write a flame graph of the allocation sites (bytes
    /// allocated by stack) to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub flamegraph: Option<std::path::PathBuf>,

    /// At the end, write a self-contained HTML report to this file (no
    /// network, no script: open it anywhere, attach it to a ticket): per
    /// process, the verdict and its evidence, memory and GCs over time, GC
    /// pauses, allocation sites and their flame graph, and each death's
    /// last minutes.
    #[arg(long, value_name = "FILE.html")]
    pub html: Option<std::path::PathBuf>,

    /// At the end, write the allocation sites as a pprof profile (gzipped
    /// protobuf: `go tool pprof`, Pyroscope and Grafana read it).
    #[arg(long, value_name = "FILE.pb.gz")]
    pub pprof: Option<std::path::PathBuf>,

    /// When a process's JS heap is judged to leak, look inside it once
    /// through its inspector (as `heaptrace heap` does: SIGUSR1, then closed
    /// again): `heap-diff` takes two snapshots --on-leak-over apart (each
    /// pauses the process; refused, as by `heaptrace heap`, above a 256 MiB
    /// heap or without the memory it needs), `sample` runs the sampling
    /// heap profiler (no pause). Off by default.
    #[arg(long, value_enum, value_name = "ACTION")]
    pub on_leak: Option<crate::collect::on_leak::OnLeakAction>,

    /// How far apart --on-leak's snapshots are, or how long it samples.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = units::parse_duration)]
    pub on_leak_over: Duration,

    #[command(flatten)]
    pub tracing: TracingArgs,
}

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Address to serve on; a pod IP and port in a DaemonSet.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub select: SelectionArgs,

    /// The `node` label (in Kubernetes: spec.nodeName from the downward
    /// API). Default: the host name.
    #[arg(long)]
    pub node_name: Option<String>,

    /// Series per process, with `pid` and `comm` labels (many more series:
    /// off by default).
    #[arg(long)]
    pub per_process: bool,

    /// How long counters and histograms of exited processes and containers
    /// stay after their last update.
    #[arg(long, default_value = "5m", value_parser = units::parse_duration)]
    pub series_grace: Duration,

    /// Metric name prefix.
    #[arg(long, default_value = "heaptrace")]
    pub metric_prefix: String,

    #[command(flatten)]
    pub tracing: TracingArgs,
}

/// `heaptrace heap PID`.
#[derive(Debug, Clone, Args)]
pub struct HeapArgs {
    /// The node process.
    #[arg(value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: u32,

    /// Take two snapshots this far apart and show what grew between them
    /// (by the memory the new objects hold), and what holds it.
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration, conflicts_with = "sample")]
    pub diff: Option<Duration>,

    /// Run the sampling heap profiler for this long instead of taking a
    /// snapshot (no pause): which JS functions allocated the memory still
    /// alive at the end.
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration)]
    pub sample: Option<Duration>,

    /// Refuse to take a snapshot of a JS heap with more than this in use: a
    /// snapshot pauses the process up to 60 ms per MiB of heap (measured on
    /// small objects), and needs up to 7 times the heap and 48 MiB in extra
    /// memory inside it (refused too when its cgroup or the host has not that much
    /// left).
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = units::parse_size)]
    pub max_heap: u64,

    /// Take the snapshot even above --max-heap or without the memory it
    /// may need.
    #[arg(long)]
    pub force: bool,

    /// Also write the snapshot (with --diff, the second to FILE-2 before its
    /// extension) or the sampling profile to this file, readable by root only (mode 0600); Chrome
    /// DevTools opens them.
    #[arg(long, value_name = "FILE")]
    pub save: Option<std::path::PathBuf>,

    /// Classes (or sites) shown.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub top: u32,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// `heaptrace report FILE`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The recording (`--record FILE`).
    #[arg(value_name = "FILE")]
    pub file: std::path::PathBuf,

    /// Output format (default: text; with --html, nothing on stdout unless
    /// asked for).
    #[arg(short, long, value_enum)]
    pub output: Option<OutputFormat>,

    /// Write the HTML report of the recording to this file (self-contained:
    /// charts, verdicts, sites, deaths; opens offline).
    #[arg(long, value_name = "FILE.html")]
    pub html: Option<std::path::PathBuf>,

    /// Text output: print every GC pause and every large mapping (by
    /// default they are summed up per interval).
    #[arg(short, long)]
    pub events: bool,

    /// Browse the recording in the live view, with a time cursor (left and
    /// right move it by a second, [ and ] by 30 s, Home and End).
    #[arg(long, conflicts_with_all = ["output", "events"])]
    pub tui: bool,
}

/// The full command definition: the derived one, with the agent's
/// defaults and environment variables applied.
pub fn command() -> clap::Command {
    Cli::command().mut_subcommand("agent", |agent| {
        agent
            // Scraped every few seconds: a 1 s interval would cost CPU for
            // nothing.
            .mut_arg("interval", |a| a.default_value("5s"))
            // The agent's memory budget counts the ring buffer.
            .mut_arg("ring_buffer", |a| a.default_value("4MiB"))
            .mut_args(with_env)
    })
}

/// `--node-name` reads `HEAPTRACE_NODE_NAME`, and so on; a list flag takes
/// a comma-separated list there.
fn with_env(arg: Arg) -> Arg {
    let Some(long) = arg.get_long() else { return arg };
    let env = format!("HEAPTRACE_{}", long.to_ascii_uppercase().replace('-', "_"));
    let list = matches!(arg.get_action(), ArgAction::Append);
    // The value is not shown in --help: it may be set on the machine that
    // prints the help, and that is not the default.
    let arg = arg.env(env).hide_env_values(true);
    if list { arg.value_delimiter(',') } else { arg }
}

/// Parses the process's arguments; on bad flags, prints clap's message and
/// exits 2 (0 for `--help` and `--version`).
pub fn parse() -> Cli {
    parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut matches = command().try_get_matches_from(args)?;
    Cli::from_arg_matches_mut(&mut matches)
}
