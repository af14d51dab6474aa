use std::{io, process::ExitCode};

use clap::Parser;
use heaptrace::{
    agent::AgentCli,
    cli::{Cli, Config, OutputFormat},
    output::{JsonSink, Sink, TextSink},
    run::run,
};

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("agent") {
        return agent_main();
    }
    let config = match Config::from_cli(Cli::parse()) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("heaptrace: error: {message}");
            return ExitCode::from(2);
        }
    };
    // One thread: the collector is a single task, and on a small host every
    // core it leaves alone is one the traced workload keeps.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("heaptrace: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stdout = io::stdout().lock();
    let mut sink: Box<dyn Sink> = match config.output {
        OutputFormat::Text => Box::new(TextSink::new(stdout)),
        OutputFormat::Json => Box::new(JsonSink::new(stdout)),
    };
    match runtime.block_on(run(config, sink.as_mut())) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("heaptrace: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `heaptrace agent ...`: its own flags (each with an environment variable).
fn agent_main() -> ExitCode {
    let cli = AgentCli::parse_from(std::env::args().skip(1));
    let config = match cli.config() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("heaptrace agent: error: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("heaptrace agent: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    match runtime.block_on(local.run_until(heaptrace::agent::run(cli, config))) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("heaptrace agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
