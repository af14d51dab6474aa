//! Everything heaptrace knows about V8, in one place, shaped like a runtime
//! plug-in (the contract the OpenTelemetry eBPF profiler uses for its
//! interpreters):
//!
//! 1. [`loader`]: a loader inspects one ELF file and returns per-binary
//!    data, cached by file identity and build-id ([`Loader::find_in_process`]
//!    finds the file that holds V8 in a process first).
//! 2. [`binary`]: the per-binary data ([`V8Binary`]) attaches to a process
//!    and returns a per-process instance ([`V8Binary::attach`]).
//! 3. The instance detaches ([`V8Instance::detach`]).
//!
//! [`probes`] is the one table of what is probed, on which versions, by
//! which eBPF program; [`hold`] keeps a just-exec'd process still while its
//! probes go in; [`limit`] reads V8's heap limit from a process by running
//! `Heap::MaxReserved()` in [`emulate`]. [`V8Support`] is the collector's one handle on all of it:
//! it picks the scope (per process for `--pid`, per binary for selections),
//! keeps the instances, and words what happened.
//!
//! [`postmortem`] reads V8's postmortem metadata (the `v8dbg_*` symbols)
//! once per binary, and [`frames`] names JS frames by it from outside the
//! process, reading its heap through [`heap`] ([`scope_info`] and
//! [`script`] for names and lines); [`perfmap`] reads the map a node
//! started with `--perf-basic-prof` writes, a second source of names.
//!
//! The kernel module knows programs and maps, not V8: this module asks it
//! for uprobe attachments by program name.

pub mod binary;
pub mod emulate;
pub mod frames;
pub mod heap;
pub mod hold;
pub mod limit;
pub mod loader;
pub mod memory;
mod naming;
pub mod perfmap;
pub mod postmortem;
pub mod probes;
pub mod scope_info;
pub mod script;

use std::collections::HashMap;

pub use binary::{AttachReport, V8Binary, V8Instance};
pub use frames::{JsFrameNamer, NamerStats, Unnamed, is_interpreter_frame_builtin};
pub use limit::{HeapLimits, LimitError, LimitReader};
pub use loader::{FileId, Found, LoadError, Loader, ProcessBinary};
pub use perfmap::{PerfMap, PerfSymbol};
pub use postmortem::{Postmortem, PostmortemError, V8Version};

use crate::kernel::{KernelError, Tracer};

/// How one process fared.
pub enum Attach {
    /// Probes cover it. `new`: they were placed now; false when its
    /// binary's shared probes were there already.
    Probed { binary: ProcessBinary, report: AttachReport, new: bool },
    /// None of its files has V8's GC functions (not Node, or stripped).
    NotV8 { looked_at: Vec<(String, Option<String>)> },
    /// Its binary could not be read.
    Unreadable(LoadError),
    /// V8 is there, but the kernel refused the probes.
    Failed(KernelError),
}

impl Attach {
    pub fn probed(&self) -> bool {
        matches!(self, Attach::Probed { .. })
    }

    /// What to say about it on stderr. A process the user named hears why
    /// it gets no GC figures; with a selection (many processes that are not
    /// Node), only `verbose` says so. Failures are always said.
    pub fn messages(
        &self,
        pid: u32,
        comm: &str,
        named: bool,
        verbose: bool,
        per_binary: bool,
    ) -> Vec<String> {
        let say = named || verbose;
        match self {
            Attach::Probed { binary, report, new } => {
                let mut out = Vec::new();
                if *new && !report.missing.is_empty() {
                    out.push(format!(
                        "pid {pid} ({comm}): V8 functions not found in {}: {} (their figures will be missing)",
                        binary.display_path,
                        report.missing.join(", ")
                    ));
                }
                if *new && verbose {
                    out.push(format!(
                        "pid {pid}: GC probes on {} (build-id {}, {}, {}): {}",
                        binary.display_path,
                        binary.binary.build_id.as_deref().unwrap_or("none"),
                        if report.v8_timestamps { "V8's own pause timestamps" } else { "kernel timestamps" },
                        if per_binary { "every process of this binary" } else { "this process only" },
                        report.attached.join(", ")
                    ));
                }
                out
            }
            Attach::NotV8 { looked_at } if say => {
                let files: Vec<String> = looked_at
                    .iter()
                    .map(|(path, id)| format!("{path} (build-id {})", id.as_deref().unwrap_or("none")))
                    .collect();
                vec![format!(
                    "pid {pid} ({comm}): no V8 garbage-collector symbols in {}: not a Node.js process, or a \
                     stripped binary; tracing memory only",
                    files.join(", ")
                )]
            }
            Attach::Unreadable(e) if say => {
                vec![format!(
                    "pid {pid} ({comm}): cannot read its binary for V8 symbols ({e}); tracing memory only"
                )]
            }
            Attach::Failed(e) => {
                vec![format!(
                    "pid {pid} ({comm}): GC probes could not be attached ({e:#}); tracing memory only"
                )]
            }
            Attach::NotV8 { .. } | Attach::Unreadable(_) => Vec::new(),
        }
    }
}

/// The collector's handle on V8: finds it in processes, places and removes
/// probes, and holds a new process still while that happens.
pub struct V8Support {
    loader: Loader,
    /// Probes once per binary for every process of it (selections), or per
    /// process (`--pid`: other processes of the binary never trap).
    per_binary: bool,
    /// Probes shared by every process of one binary. They stay until
    /// heaptrace exits: the kernel programs filter on the traced set, and
    /// the next process of that binary is covered from its first
    /// instruction.
    shared: HashMap<FileId, V8Instance>,
    /// Probes placed for one process alone.
    instances: HashMap<u32, V8Instance>,
    /// Processes whose probes the kernel refused.
    attach_failures: u64,
    /// Where `Heap::MaxReserved()` is, per process whose limit was read.
    limits: HashMap<u32, LimitReader>,
    /// What names each process's JS frames (see `naming`).
    frames: naming::Frames,
}

impl V8Support {
    pub fn new(per_binary: bool) -> Self {
        Self {
            loader: Loader::default(),
            per_binary,
            shared: HashMap::new(),
            instances: HashMap::new(),
            attach_failures: 0,
            limits: HashMap::new(),
            frames: HashMap::new(),
        }
    }

    pub fn per_binary(&self) -> bool {
        self.per_binary
    }

    /// Holds a just-exec'd process still (see [`hold`]) when its
    /// executable has not been inspected yet: reading its symbols takes
    /// longer than node takes to its first GC. None when no hold is needed.
    pub fn hold_if_new(&self, pid: u32) -> Option<Result<hold::Held, String>> {
        (!self.loader.knows_executable(pid)).then(|| hold::hold(pid))
    }

    /// Finds V8 in the process and attaches the probes, unless its binary's
    /// shared probes cover it already.
    pub fn attach(&mut self, pid: u32, kernel: &mut Tracer) -> Attach {
        let binary = match self.loader.find_in_process(pid) {
            Ok(Found::V8(binary)) => binary,
            Ok(Found::NotV8 { looked_at }) => return Attach::NotV8 { looked_at },
            Err(e) => return Attach::Unreadable(e),
        };
        if self.per_binary
            && let Some(shared) = self.shared.get(&binary.file)
        {
            return Attach::Probed { report: shared.report.clone(), binary, new: false };
        }
        let target = if self.per_binary { None } else { Some(pid) };
        match binary.binary.attach(kernel, &binary.attach_path, target) {
            Ok(instance) => {
                let report = instance.report.clone();
                if self.per_binary {
                    self.shared.insert(binary.file, instance);
                } else if let Some(old) = self.instances.insert(pid, instance) {
                    old.detach(kernel);
                }
                Attach::Probed { binary, report, new: true }
            }
            Err(e) => {
                self.attach_failures += 1;
                Attach::Failed(e)
            }
        }
    }

    /// Detaches the probes placed for this process alone (it exited, or
    /// exec'd another program). Shared probes stay.
    pub fn detach(&mut self, pid: u32, kernel: &mut Tracer) {
        self.limits.remove(&pid);
        self.frames.remove(&pid);
        if let Some(instance) = self.instances.remove(&pid) {
            instance.detach(kernel);
        }
    }

    /// V8's heap limit in process `pid`, exactly what
    /// `v8.getHeapStatistics().heap_size_limit` reports there, for the
    /// isolate whose `Heap` is at `heap` (arg 0 of `Heap::CollectGarbage`,
    /// as `GcPause.heap` delivers it). Read from the process each call (see
    /// [`limit`]); where the function is in it is found on the first call
    /// and kept until [`V8Support::detach`].
    pub fn heap_size_limit(&mut self, pid: u32, heap: u64) -> Result<HeapLimits, LimitError> {
        let reader = match self.limits.entry(pid) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let binary = match self.loader.find_in_process(pid) {
                    Ok(Found::V8(binary)) => binary,
                    Ok(Found::NotV8 { .. }) => return Err(LimitError::NotV8(pid)),
                    Err(source) => return Err(LimitError::Load { pid, source }),
                };
                e.insert(LimitReader::new(pid, &binary)?)
            }
        };
        reader.read(heap)
    }

    /// Processes whose probes the kernel refused, so far.
    pub fn attach_failures(&self) -> u64 {
        self.attach_failures
    }
}
