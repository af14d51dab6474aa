use std::{
    future::Future,
    io::{self, IsTerminal, Write},
    process::ExitCode,
};

use heaptrace::{
    cli::{self, Command, Config, OutputFormat},
    collect,
    output::{HtmlSink, JsonSink, Sink, Tee, TextSink, write_heap_report},
};

fn main() -> ExitCode {
    keep_large_buffers_out_of_the_heap();
    match cli::parse().into_command() {
        Command::Trace(args) => {
            let config = match Config::trace(args) {
                Ok(config) => config,
                Err(message) => return usage_error("heaptrace", &message),
            };
            if config.live_view && io::stdout().is_terminal() {
                return run_to_end("heaptrace", async move {
                    let mut sink = heaptrace::tui::TuiSink::new();
                    let traced = match config.html.clone() {
                        Some(path) => {
                            collect::run(config, &mut Tee::new(&mut sink, HtmlSink::new(path))).await
                        }
                        None => collect::run(config, &mut sink).await,
                    };
                    // The terminal back, then the summary on it.
                    sink.finish()?;
                    traced
                });
            }
            run_to_end("heaptrace", async move {
                let stdout = io::stdout().lock();
                let mut sink: Box<dyn Sink> = match config.output {
                    OutputFormat::Text => Box::new(TextSink::new(stdout, config.events)),
                    OutputFormat::Json => Box::new(JsonSink::new(stdout)),
                };
                if let Some(path) = &config.html {
                    sink = Box::new(Tee::new(sink, HtmlSink::new(path)));
                }
                collect::run(config, sink.as_mut()).await
            })
        }
        Command::Agent(args) => {
            let config = match Config::agent(&args) {
                Ok(config) => config,
                Err(message) => return usage_error("heaptrace agent", &message),
            };
            run_to_end("heaptrace agent", heaptrace::agent::run(args, config))
        }
        Command::Report(args) => match heaptrace::recording::report::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("heaptrace report: error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Heap(args) => {
            let config = match cli::heap_config(&args) {
                Ok(config) => config,
                Err(message) => return usage_error("heaptrace heap", &message),
            };
            let (output, top) = (args.output, args.top as usize);
            run_to_end("heaptrace heap", async move {
                let mut say = |line: String| eprintln!("heaptrace: {line}");
                let report = heaptrace::heap::run::inspect(&config, &mut say).await?;
                let mut stdout = io::stdout().lock();
                match output {
                    OutputFormat::Text => write_heap_report(&mut stdout, &report, top)?,
                    OutputFormat::Json => {
                        serde_json::to_writer(&mut stdout, &heaptrace::core::Record::Heap(report))?;
                        writeln!(stdout)?;
                    }
                }
                Ok(())
            })
        }
    }
}

/// Large transient buffers (the kernel's BTF, read twice at load: by aya
/// and for heaptrace's own offsets; a node binary's symbol tables) must go
/// back to the system when freed. glibc maps them on their own, but once one
/// is freed it raises its mmap threshold to that size, and the next ones go
/// to the brk heap, which never shrinks below live data: 13 MiB of RSS kept
/// for good, measured. A fixed threshold turns that adjustment off.
fn keep_large_buffers_out_of_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before
    // any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

/// Flags that parse but do not fit together: exit 2, like clap's own errors.
fn usage_error(program: &str, message: &str) -> ExitCode {
    eprintln!("{program}: error: {message}");
    ExitCode::from(2)
}

/// Runs a task to its end on the one runtime every subcommand uses: one
/// thread (the collector is a single task, and on a small host every core
/// it leaves alone is one the traced workload keeps), with a `LocalSet`
/// for tasks that share the collector's state (the agent's HTTP handlers).
fn run_to_end<T>(program: &str, task: impl Future<Output = anyhow::Result<T>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{program}: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    match runtime.block_on(local.run_until(task)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
