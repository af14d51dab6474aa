//! `heaptrace agent`: host-wide tracing for a fleet. One agent per node
//! (a Kubernetes DaemonSet) traces Node processes and their containers and
//! serves Prometheus metrics; Prometheus and Kubernetes do the rest.
//!
//! The agent is the same collector as `heaptrace trace` (`collect::run`)
//! with a [`metrics::MetricsSink`] as its output, and an HTTP edge beside
//! it. Its flags are in `crate::cli` ([`AgentArgs`]).

mod http;
pub mod metrics;

use std::{cell::RefCell, io, rc::Rc};

use anyhow::{Context, Result};

use crate::{
    cli::{AgentArgs, Config},
    collect::{self, Stop},
    core::Record,
    output::{CollectorStats, Sink},
};

use crate::host::host_name;

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
pub async fn run(cli: AgentArgs, config: Config) -> Result<Stop> {
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
    let stop = collect::run(config, &mut sink).await;
    server.abort();
    let stop = stop?;
    eprintln!("heaptrace agent: stopped ({stop:?}); every probe and program is detached");
    Ok(stop)
}
