//! One `heaptrace heap` run, from the checks to the answer: check the
//! process, open its inspector, take what the mode asks for, close the
//! inspector on every path (errors and Ctrl-C included), then analyse off
//! the runtime's thread. `heaptrace heap` and the tracer's `--on-leak` both
//! call [`inspect`].

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use thiserror::Error;

use super::{
    inspector::{self, InspectorError, Refusal, Session},
    report::{ClassStats, Cost, HeapMode, HeapReport},
    sampling::{self, ProfileError},
    snapshot::{self, Snapshot, SnapshotError},
};
use crate::units::{fmt_bytes, fmt_duration};

/// What to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One snapshot: classes by retained size.
    Summary,
    /// Two snapshots this far apart: what grew.
    Diff(Duration),
    /// The sampling heap profiler for this long.
    Sample(Duration),
}

impl Mode {
    fn kind(self) -> HeapMode {
        match self {
            Mode::Summary => HeapMode::Summary,
            Mode::Diff(_) => HeapMode::Diff,
            Mode::Sample(_) => HeapMode::Sample,
        }
    }
}

#[derive(Clone, Debug)]
pub struct HeapConfig {
    pub pid: u32,
    pub mode: Mode,
    /// Largest JS heap (used bytes) a snapshot is taken of without `force`.
    pub max_heap: u64,
    pub force: bool,
    pub save: Option<PathBuf>,
    /// Classes whose retainer paths are looked for.
    pub retainers: usize,
}

pub use super::safety::DEFAULT_MAX_HEAP;
use super::safety::{self, expected_pause, fmt_pause};

/// How long the sampling profiler samples: every this many bytes allocated
/// on average (V8's default).
const SAMPLING_INTERVAL_BYTES: u64 = 32 << 10;

/// Node opens its inspector within milliseconds of SIGUSR1; a loaded
/// process may take a while to get to it.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum HeapError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Inspector(#[from] InspectorError),
    #[error(
        "pid {pid}: no snapshot taken: {why}. Use --sample (no pause, no snapshot), or --force to take it \
         anyway"
    )]
    TooCostly { pid: u32, why: String },
    #[error("the heap snapshot could not be read: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("--save {}: {reason}", path.display())]
    Save { path: PathBuf, reason: String },
    #[error("interrupted; the inspector was closed again")]
    Interrupted,
    #[error("the analysis stopped: {0}")]
    Analysis(String),
}

/// What was taken from the process, before analysis.
enum Taken {
    Snapshots(Vec<Vec<u8>>),
    Profile(serde_json::Value),
}

/// Runs one inspection, stopped by Ctrl-C or SIGTERM. `say` gets progress
/// lines for stderr (what is done to the process, as it is done).
pub async fn inspect(config: &HeapConfig, say: &mut dyn FnMut(String)) -> Result<HeapReport, HeapError> {
    inspect_until(config, say, interrupted()).await
}

/// [`inspect`], stopped when `cancel` completes (the tracer's end): the
/// inspector is closed before it returns either way.
pub async fn inspect_until(
    config: &HeapConfig,
    say: &mut dyn FnMut(String),
    cancel: impl std::future::Future<Output = ()>,
) -> Result<HeapReport, HeapError> {
    let pid = config.pid;
    // /proc and the node binary's symbols: tens of ms, off the runtime.
    let target = tokio::task::spawn_blocking(move || inspector::preflight(pid))
        .await
        .map_err(|e| HeapError::Analysis(e.to_string()))??;
    say(if target.already_open {
        format!(
            "pid {pid}: node's inspector is already listening on port {}: using it, and leaving it open",
            target.port
        )
    } else {
        format!(
            "pid {pid}: opening node's inspector (SIGUSR1: node listens on 127.0.0.1:{} in its own network \
             namespace until heaptrace closes it)",
            target.port
        )
    });
    let mut session = Session::open(&target, OPEN_TIMEOUT).await?;
    let taken = tokio::select! {
        taken = take(&mut session, config, say) => taken,
        () = cancel => Err(HeapError::Interrupted),
    };
    let opened = session.opened();
    let closed = session.close().await;
    match (&closed, opened) {
        (Ok(()), true) => say(format!("pid {pid}: inspector closed (the port refuses connections again)")),
        (Ok(()), false) => say(format!("pid {pid}: disconnected; the inspector stays open as it was")),
        (Err(e), _) => say(format!("pid {pid}: WARNING: closing the inspector failed: {e}")),
    }
    let (taken, mut cost) = taken?;
    closed?;
    cost.opened_inspector = opened;
    analyse(config.clone(), taken, cost).await
}

/// Ctrl-C or SIGTERM: stop, but close the inspector first.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn take(
    session: &mut Session,
    config: &HeapConfig,
    say: &mut dyn FnMut(String),
) -> Result<(Taken, Cost), HeapError> {
    let pid = config.pid;
    let mut cost = Cost { heap_used_bytes: session.heap_used().await?, ..Default::default() };
    let used = cost.heap_used_bytes;
    match config.mode {
        Mode::Sample(over) => {
            say(format!(
                "pid {pid}: sampling allocations for {} (JS heap {} in use; no pause)",
                fmt_duration(over.as_secs_f64()),
                fmt_bytes(used as f64)
            ));
            session.start_sampling(SAMPLING_INTERVAL_BYTES).await?;
            tokio::time::sleep(over).await;
            let profile = session.stop_sampling().await?;
            if let Some(path) = &config.save {
                let bytes = serde_json::to_vec(&profile).map_err(|e| HeapError::Analysis(e.to_string()))?;
                save(path, &bytes)?;
                say(saved_message(path));
                cost.saved.push(path.clone());
            }
            Ok((Taken::Profile(profile), cost))
        }
        Mode::Summary | Mode::Diff(_) => {
            if !config.force {
                let (room, host) =
                    tokio::task::spawn_blocking(move || (safety::headroom(pid), safety::host_available()))
                        .await
                        .unwrap_or_default();
                if let Some(why) = safety::refusal(used, config.max_heap, room.as_ref(), host.as_ref()) {
                    return Err(HeapError::TooCostly { pid, why });
                }
            }
            let count = if matches!(config.mode, Mode::Diff(_)) { 2 } else { 1 };
            let mut snapshots = Vec::with_capacity(count);
            for i in 0..count {
                if i == 1 {
                    let Mode::Diff(wait) = config.mode else {
                        unreachable!("two snapshots only in diff mode")
                    };
                    say(format!("pid {pid}: second snapshot in {}", fmt_duration(wait.as_secs_f64())));
                    tokio::time::sleep(wait).await;
                }
                let used = if i == 0 { used } else { session.heap_used().await? };
                say(format!(
                    "pid {pid}: taking a heap snapshot of a {} JS heap: its JavaScript pauses for up to {} \
                     (less with larger objects)",
                    fmt_bytes(used as f64),
                    fmt_pause(expected_pause(used))
                ));
                let started = Instant::now();
                let snapshot = session.take_snapshot().await?;
                cost.snapshot_ms.push(started.elapsed().as_secs_f64() * 1e3);
                cost.snapshot_bytes.push(snapshot.len() as u64);
                if let Some(path) = &config.save {
                    let path = if i == 0 { path.clone() } else { second_file(path) };
                    save(&path, &snapshot)?;
                    say(saved_message(&path));
                    cost.saved.push(path);
                }
                snapshots.push(snapshot);
            }
            Ok((Taken::Snapshots(snapshots), cost))
        }
    }
}

fn saved_message(path: &Path) -> String {
    format!("saved {} (mode 0600: it holds the process's data)", path.display())
}

/// `--save x.heapsnapshot` with `--diff`: the second goes to
/// `x-2.heapsnapshot`, which DevTools still recognises by its extension.
pub fn second_file(path: &Path) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-2.{}", ext.to_string_lossy()),
        None => format!("{stem}-2"),
    };
    path.with_file_name(name)
}

/// Writes a file only root can read: snapshots hold every string the
/// process has (tokens, passwords, personal data).
fn save(path: &Path, bytes: &[u8]) -> Result<(), HeapError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let fail = |e: std::io::Error| HeapError::Save { path: path.to_path_buf(), reason: e.to_string() };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    // An existing file keeps its mode through open: set it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    file.write_all(bytes).map_err(fail)
}

/// Parsing and analysis, on a blocking thread: a large snapshot takes
/// seconds of CPU, and the tracer's collector must keep draining meanwhile.
async fn analyse(config: HeapConfig, taken: Taken, cost: Cost) -> Result<HeapReport, HeapError> {
    tokio::task::spawn_blocking(move || analyse_now(&config, taken, cost))
        .await
        .map_err(|e| HeapError::Analysis(e.to_string()))?
}

fn analyse_now(config: &HeapConfig, taken: Taken, cost: Cost) -> Result<HeapReport, HeapError> {
    let mut report = HeapReport { pid: config.pid, mode: config.mode.kind(), cost, ..Default::default() };
    report.over_seconds = match config.mode {
        Mode::Summary => None,
        Mode::Diff(d) | Mode::Sample(d) => Some(d.as_secs_f64()),
    };
    match taken {
        Taken::Profile(profile) => report.sites = sampling::sites(&profile)?,
        Taken::Snapshots(raw) => {
            let mut parsed = Vec::with_capacity(raw.len());
            for bytes in raw {
                parsed.push(Snapshot::parse(&bytes)?);
                drop(bytes);
            }
            let (classes, not_in) = match parsed.as_slice() {
                [only] => (only.classes().to_vec(), None),
                [before, after] => (snapshot::diff(before, after), Some(before)),
                _ => unreachable!("one or two snapshots"),
            };
            let last = parsed.last().expect("at least one snapshot");
            let paths = snapshot::Retainers::new(last, not_in);
            // A path of one step is a root itself (the global object).
            report.retainers = retainers_of(&classes, not_in.is_some())
                .filter_map(|c| paths.path(&c.name))
                .filter(|r| r.path.len() > 1)
                .take(config.retainers)
                .collect();
            report.classes = classes;
        }
    }
    Ok(report)
}

/// The classes whose retainers are worth a path: the application's; with a
/// diff, those that grew and whose new objects hold at least a tenth of
/// what the top one's hold (the rest is noise beside the leak).
fn retainers_of(classes: &[ClassStats], diff: bool) -> impl Iterator<Item = &ClassStats> {
    let top = classes.first().and_then(|c| c.new_retained_bytes).unwrap_or(0);
    classes
        .iter()
        .filter(|c| c.is_user_class())
        .filter(move |c| !diff || (c.grew() && c.new_retained_bytes.unwrap_or(0).saturating_mul(10) >= top))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_snapshot_keeps_the_extension() {
        assert_eq!(second_file(Path::new("/tmp/a.heapsnapshot")), PathBuf::from("/tmp/a-2.heapsnapshot"));
        assert_eq!(second_file(Path::new("dump")), PathBuf::from("dump-2"));
    }

    #[test]
    fn saved_files_are_private_even_when_they_existed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("heaptrace-save-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.heapsnapshot");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        save(&path, b"{}").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn retainer_paths_go_to_the_classes_that_grew_most() {
        let class = |name: &str, grown: i64, held: u64| ClassStats {
            name: name.into(),
            count_delta: Some(grown),
            new_retained_bytes: Some(held),
            ..Default::default()
        };
        let classes = [
            class("Object", 40, 32_000_000),
            class("Array", 6, 4_000_000),     // grew, holds over a tenth
            class("(array)", 40, 32_000_000), // V8's own
            class("Timeout", 0, 9_000_000),   // replaced, not grown
            class("Node / IsolateData", 0, 4_000),
            class("Map", 1, 1_000), // grew, but noise beside the leak
        ];
        let names: Vec<&str> = retainers_of(&classes, true).map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Object", "Array"]);
        let names: Vec<&str> = retainers_of(&classes, false).map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Object", "Array", "Timeout", "Map"]);
    }
}
