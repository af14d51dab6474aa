//! `heaptrace agent`: host-wide tracing for a fleet. One agent per node
//! (a Kubernetes DaemonSet) traces Node processes and their containers and
//! serves Prometheus metrics; Prometheus and Kubernetes do the rest.
//!
//! The agent is the same collector as the CLI (`run::run`) with a
//! [`metrics::MetricsSink`] as its output, and an HTTP edge beside it.

mod http;
pub mod metrics;

use std::{cell::RefCell, io, net::SocketAddr, rc::Rc, time::Duration};

use anyhow::{Context, Result};
use clap::Parser;

use crate::{
    cli::{Cli, Config, OutputFormat},
    core::Record,
    kernel::MemHookChoice,
    output::{CollectorStats, Sink},
    run::{self, Stop},
    units,
};

/// Every flag has an environment variable, for a DaemonSet's `env:`.
/// Lists in variables are comma-separated.
#[derive(Debug, Parser)]
#[command(
    name = "heaptrace agent",
    version,
    about = "Trace Node.js processes host-wide and serve Prometheus metrics (/metrics), /healthz and /findings.",
    after_help = "By default the agent traces processes named node (--comm node).\nExample:\n  sudo heaptrace agent --listen 0.0.0.0:9464"
)]
pub struct AgentCli {
    /// Address to serve on; a pod IP and port in a DaemonSet.
    #[arg(long, env = "HEAPTRACE_LISTEN", default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,

    /// Trace processes with this command name (default: node).
    #[arg(long = "comm", value_name = "NAME", env = "HEAPTRACE_COMM", value_delimiter = ',')]
    pub comms: Vec<String>,

    /// Trace every process on the host.
    #[arg(long, env = "HEAPTRACE_ALL", conflicts_with_all = ["comms", "containers", "cgroups"])]
    pub all: bool,

    /// Trace the processes of a container (id or prefix).
    #[arg(long = "container", value_name = "ID", env = "HEAPTRACE_CONTAINER", value_delimiter = ',')]
    pub containers: Vec<String>,

    /// Trace the processes of a cgroup (v2 path) and its descendants.
    #[arg(long = "cgroup", value_name = "PATH", env = "HEAPTRACE_CGROUP", value_delimiter = ',')]
    pub cgroups: Vec<String>,

    /// Also trace these processes.
    #[arg(long = "pid", value_name = "PID", env = "HEAPTRACE_PID", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
    pub pids: Vec<u32>,

    /// The `node` label (in Kubernetes: spec.nodeName from the downward
    /// API). Default: the host name.
    #[arg(long, env = "HEAPTRACE_NODE_NAME")]
    pub node_name: Option<String>,

    /// Series per process, with `pid` and `comm` labels (many more series:
    /// off by default).
    #[arg(long, env = "HEAPTRACE_PER_PROCESS")]
    pub per_process: bool,

    /// How long counters and histograms of exited processes and containers
    /// stay after their last update.
    #[arg(long, env = "HEAPTRACE_SERIES_GRACE", default_value = "5m", value_parser = units::parse_duration)]
    pub series_grace: Duration,

    /// Metric name prefix.
    #[arg(long, env = "HEAPTRACE_METRIC_PREFIX", default_value = "heaptrace")]
    pub metric_prefix: String,

    /// Time between samples of /proc and the cgroups.
    #[arg(long, env = "HEAPTRACE_INTERVAL", default_value = "5s", value_parser = units::parse_duration)]
    pub interval: Duration,

    /// Kernel-to-agent ring buffer (a power of two). Smaller than the CLI's
    /// default: the agent's memory budget counts it.
    #[arg(long, env = "HEAPTRACE_RING_BUFFER", default_value = "4MiB", value_parser = units::parse_size)]
    pub ring_buffer: u64,

    /// Report every mmap or mremap at least this large as a large allocation.
    #[arg(long, env = "HEAPTRACE_LARGE_THRESHOLD", default_value = "1MiB", value_parser = units::parse_size)]
    pub large_threshold: u64,

    #[arg(long, env = "HEAPTRACE_MEM_HOOK", value_enum, default_value_t = MemHookChoice::Auto)]
    pub mem_hook: MemHookChoice,

    /// Say how tracing was set up, and which processes were skipped.
    #[arg(short, long, env = "HEAPTRACE_VERBOSE")]
    pub verbose: bool,
}

impl AgentCli {
    /// The collector's configuration; the agent's own settings stay here.
    pub fn config(&self) -> Result<Config, String> {
        if self.metric_prefix.is_empty()
            || !self.metric_prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || self.metric_prefix.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(format!(
                "--metric-prefix {:?}: expected letters, digits and _ (not starting with a digit)",
                self.metric_prefix
            ));
        }
        let by_property =
            self.all || !self.comms.is_empty() || !self.containers.is_empty() || !self.cgroups.is_empty();
        let comms = if by_property { self.comms.clone() } else { vec!["node".to_owned()] };
        let mut config = Config::from_cli(Cli {
            pids: self.pids.clone(),
            all: self.all,
            comms,
            containers: self.containers.clone(),
            cgroups: self.cgroups.clone(),
            duration: None,
            interval: self.interval,
            output: OutputFormat::Json,
            large_threshold: self.large_threshold,
            mem_hook: self.mem_hook,
            ring_buffer: self.ring_buffer,
            verbose: self.verbose,
        })?;
        // Scraped every few seconds: 100 ms of staleness costs nothing, and
        // waking five times less often is most of the idle agent's CPU. The
        // 4 MiB buffer holds ~45k events, 100 ms of far more than a busy
        // node makes; exec and exit events still wake the agent at once.
        config.drain_every = Duration::from_millis(100);
        Ok(config)
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// The collector's sink: records go into the shared metrics.
struct Shared(http::Shared);

impl Sink for Shared {
    fn record(&mut self, record: &Record) -> io::Result<()> {
        self.0.borrow_mut().record(record)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn tick(&mut self, stats: &CollectorStats) {
        self.0.borrow_mut().tick(stats);
    }
}

/// Runs the agent until SIGTERM or SIGINT. Must run inside a
/// `tokio::task::LocalSet` (the HTTP handlers share the metrics by `Rc`).
pub async fn run(cli: AgentCli, config: Config) -> Result<Stop> {
    // Bind first: a taken port fails before anything is loaded.
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("--listen {}: cannot listen there", cli.listen))?;
    let metrics = Rc::new(RefCell::new(metrics::MetricsSink::new(metrics::MetricsConfig {
        node: cli.node_name.clone().unwrap_or_else(host_name),
        per_process: cli.per_process,
        grace_ns: cli.series_grace.as_nanos() as u64,
        prefix: cli.metric_prefix.clone(),
    })));
    let server = tokio::task::spawn_local(http::serve(listener, metrics.clone(), config.interval));
    eprintln!(
        "heaptrace agent: serving http://{}/metrics ({}, every {})",
        cli.listen,
        config.selection.describe(),
        humantime::format_duration(config.interval)
    );
    let mut sink = Shared(metrics);
    let stop = run::run(config, &mut sink).await;
    server.abort();
    let stop = stop?;
    eprintln!("heaptrace agent: stopped ({stop:?}); every probe and program is detached");
    Ok(stop)
}
