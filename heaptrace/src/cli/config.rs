//! The second stage: parsed flags → a validated [`Config`], with errors
//! that name the flag and say what was expected.

use std::time::Duration;

use clap::ValueEnum;

use super::{AgentArgs, HeapArgs, SelectionArgs, TraceArgs, TracingArgs};
use crate::{
    heap::run::{HeapConfig, Mode},
    host::select::{COMM_MAX, Selection},
    kernel::MemHookChoice,
};

/// Shortest sampling interval: below this, /proc reads start to cost.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Readable lines and a summary.
    Text,
    /// JSON Lines, one object per record (docs/json-output.md).
    Json,
}

/// A validated configuration of the collector.
#[derive(Clone, Debug)]
pub struct Config {
    pub selection: Selection,
    pub duration: Option<Duration>,
    pub interval: Duration,
    pub output: OutputFormat,
    /// `heaptrace trace` without `-o` or `--no-tui`: the live view, when
    /// stdout is a terminal (else `output`, text).
    pub live_view: bool,
    pub large_threshold: u64,
    pub mem_hook: MemHookChoice,
    pub ring_buffer_bytes: u32,
    pub verbose: bool,
    /// How often the ring buffer is drained when the kernel does not wake
    /// the collector (frequent events are submitted without wakeups):
    /// 20 ms for `heaptrace trace`, whose event lines should be prompt;
    /// 100 ms for the agent, whose output is scraped every few seconds.
    pub drain_every: Duration,
    /// Text output: a line per GC and per large mapping.
    pub events: bool,
    /// Where death dumps go (`--dump-dir`), checked to be a writable
    /// directory.
    pub dump_dir: Option<std::path::PathBuf>,
    /// Smallest mmap/mprotect that gets an allocation stack; 0: no stacks
    /// (`--no-stacks`, and the agent, which has no use for them yet).
    pub stack_min_bytes: u64,
    /// `--flamegraph` and `--pprof`: written at the end.
    pub flamegraph: Option<std::path::PathBuf>,
    pub pprof: Option<std::path::PathBuf>,
    /// `--record` and `--record-max`.
    pub record: Option<RecordTo>,
    /// `--html`: the report, written at the end.
    pub html: Option<std::path::PathBuf>,
    /// `--on-leak`, and for how long it diffs or samples.
    pub on_leak: Option<(crate::collect::on_leak::OnLeakAction, Duration)>,
}

impl Config {
    /// `heaptrace trace`.
    pub fn trace(args: TraceArgs) -> Result<Self, String> {
        let mut config = Self::tracing(args.select, args.tracing)?;
        config.duration = args.duration;
        config.output = args.output.unwrap_or(OutputFormat::Text);
        config.live_view = args.output.is_none() && !args.no_tui;
        config.events = args.events || config.verbose;
        if args.no_stacks && (args.flamegraph.is_some() || args.pprof.is_some()) {
            return Err("--flamegraph and --pprof need allocation stacks: drop --no-stacks".into());
        }
        if !args.no_stacks && args.stack_min == 0 {
            return Err("--stack-min must be greater than zero (--no-stacks turns stacks off)".into());
        }
        config.stack_min_bytes = if args.no_stacks { 0 } else { args.stack_min };
        config.flamegraph = args.flamegraph.as_deref().map(|p| output_file("--flamegraph", p)).transpose()?;
        config.pprof = args.pprof.as_deref().map(|p| output_file("--pprof", p)).transpose()?;
        config.html = args.html.as_deref().map(|p| output_file("--html", p)).transpose()?;
        if args.on_leak_over < Duration::from_secs(1) || args.on_leak_over > MAX_HEAP_WAIT {
            return Err("--on-leak-over must be from 1s to 1h (the inspector stays open that long)".into());
        }
        config.on_leak = args.on_leak.map(|action| (action, args.on_leak_over));
        Ok(config)
    }

    /// `heaptrace agent`: `--comm node` unless told what to trace.
    pub fn agent(args: &AgentArgs) -> Result<Self, String> {
        let prefix = &args.metric_prefix;
        if prefix.is_empty()
            || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || prefix.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(format!(
                "--metric-prefix {prefix:?}: expected letters, digits and _ (not starting with a digit)"
            ));
        }
        let mut select = args.select.clone();
        let by_property = select.all
            || !select.comms.is_empty()
            || !select.containers.is_empty()
            || !select.cgroups.is_empty();
        if !by_property {
            select.comms = vec!["node".to_owned()];
        }
        let mut config = Self::tracing(select, args.tracing.clone())?;
        config.output = OutputFormat::Json;
        // Scraped every few seconds: 100 ms of staleness costs nothing, and
        // waking five times less often is most of the idle agent's CPU. The
        // 4 MiB buffer holds ~45k events, 100 ms of far more than a busy
        // node makes; exec and exit events still wake the agent at once.
        config.drain_every = Duration::from_millis(100);
        Ok(config)
    }

    /// What both share: the selection and how tracing runs.
    fn tracing(select: SelectionArgs, tracing: TracingArgs) -> Result<Self, String> {
        if tracing.interval < MIN_INTERVAL {
            return Err(format!("--interval must be at least {}", humantime::format_duration(MIN_INTERVAL)));
        }
        if tracing.large_threshold == 0 {
            return Err("--large-threshold must be greater than zero".into());
        }
        let page = crate::clock::page_size();
        let ring_buffer_bytes = u32::try_from(tracing.ring_buffer)
            .ok()
            .filter(|&b| b.is_power_of_two() && u64::from(b) >= page)
            .ok_or_else(|| format!("--ring-buffer must be a power of two from {page} bytes to 2GiB"))?;
        Ok(Self {
            selection: selection(select)?,
            duration: None,
            interval: tracing.interval,
            output: OutputFormat::Text,
            live_view: false,
            large_threshold: tracing.large_threshold,
            mem_hook: tracing.mem_hook,
            ring_buffer_bytes,
            verbose: tracing.verbose,
            drain_every: Duration::from_millis(20),
            events: false,
            dump_dir: tracing.dump_dir.as_deref().map(dump_dir).transpose()?,
            record: record(&tracing)?,
            stack_min_bytes: 0,
            flamegraph: None,
            pprof: None,
            html: None,
            on_leak: None,
        })
    }
}

/// Where a recording goes, and its largest size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordTo {
    pub path: std::path::PathBuf,
    pub max_bytes: u64,
}

/// The smallest `--record-max`: a header and a few seconds of chunks.
const MIN_RECORD_MAX: u64 = 64 << 10;

fn record(tracing: &TracingArgs) -> Result<Option<RecordTo>, String> {
    let Some(path) = &tracing.record else { return Ok(None) };
    if tracing.record_max < MIN_RECORD_MAX {
        return Err(format!(
            "--record-max must be at least {}",
            crate::units::fmt_bytes(MIN_RECORD_MAX as f64)
        ));
    }
    Ok(Some(RecordTo { path: output_file("--record", path)?, max_bytes: tracing.record_max }))
}

/// Longest `--diff` or `--sample`: the inspector stays open that long.
const MAX_HEAP_WAIT: Duration = Duration::from_secs(3600);

/// `heaptrace heap`: what to take, with the flags checked.
pub fn heap(args: &HeapArgs) -> Result<HeapConfig, String> {
    let mode = match (args.diff, args.sample) {
        (Some(d), None) => Mode::Diff(d),
        (None, Some(d)) => Mode::Sample(d),
        (None, None) => Mode::Summary,
        (Some(_), Some(_)) => return Err("--diff and --sample do not go together".into()),
    };
    if let Mode::Diff(d) | Mode::Sample(d) = mode {
        let flag = if matches!(mode, Mode::Diff(_)) { "--diff" } else { "--sample" };
        if d < Duration::from_secs(1) || d > MAX_HEAP_WAIT {
            return Err(format!("{flag} must be from 1s to 1h (the inspector stays open that long)"));
        }
    }
    if args.force && matches!(mode, Mode::Sample(_)) {
        return Err("--force is for snapshots: --sample does not pause the process".into());
    }
    let save = args.save.as_deref().map(|p| output_file("--save", p)).transpose()?;
    Ok(HeapConfig { pid: args.pid, mode, max_heap: args.max_heap, force: args.force, save, retainers: 3 })
}

/// A `--dump-dir`: made if missing (mode 0700: dumps hold the process's
/// figures, not for every user), and it must be a directory heaptrace can
/// write to.
fn dump_dir(dir: &std::path::Path) -> Result<std::path::PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("--dump-dir {}: cannot create it: {e}", dir.display()))?;
    }
    if !dir.is_dir() {
        return Err(format!("--dump-dir {}: not a directory", dir.display()));
    }
    let probe = dir.join(format!(".heaptrace-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| format!("--dump-dir {}: cannot write there: {e}", dir.display()))?;
    Ok(dir.to_path_buf())
}

/// A file written at the end: checked now, so a typo does not cost a whole
/// tracing session. Its directory must exist and take a new file.
pub(crate) fn output_file(flag: &str, path: &std::path::Path) -> Result<std::path::PathBuf, String> {
    if path.is_dir() {
        return Err(format!("{flag} {}: is a directory; give a file name", path.display()));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!("{flag} {}: no such directory {}", path.display(), dir.display()));
    }
    let probe = dir.join(format!(".heaptrace-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| format!("{flag} {}: cannot write into {}: {e}", path.display(), dir.display()))?;
    Ok(path.to_path_buf())
}

fn selection(args: SelectionArgs) -> Result<Selection, String> {
    let mut pids = args.pids;
    pids.sort_unstable();
    pids.dedup();
    for comm in &args.comms {
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
    for id in &args.containers {
        let id = id.to_ascii_lowercase();
        if id.len() < 4 || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "--container {id:?}: expected a container id or a prefix of at least 4 hex digits \
                 (as `docker ps` or `crictl ps` show)"
            ));
        }
        containers.push(id);
    }
    let cgroups = args.cgroups.iter().map(|path| normalize_cgroup(path)).collect::<Result<_, _>>()?;
    Ok(Selection { pids, all: args.all, comms: args.comms, containers, cgroups })
}

/// A `--cgroup` value as a v2 path ("/a/b"): given as in /proc/PID/cgroup
/// or as a directory under the v2 mount. It must exist.
fn normalize_cgroup(given: &str) -> Result<String, String> {
    let root = crate::host::cgroup::v2_root()
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
