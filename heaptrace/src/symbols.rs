//! Finding V8's garbage-collector functions in a process: which file holds
//! V8 (the executable, or a shared library such as Debian's libnode.so), and
//! the file offsets of the functions heaptrace probes.
//!
//! Functions are matched on their mangled name up to the parameter list,
//! because V8 changes signatures between versions; the parameter list then
//! tells which variant a version has (V8 >= 12.4 passes timestamps). Files
//! are opened through `/proc/PID/exe` and `/proc/PID/map_files`, which work
//! for processes in containers and chroots and for deleted binaries.

use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
    sync::Arc,
};

use object::{Object, ObjectSegment, ObjectSymbol};
use thiserror::Error;

/// The V8 functions heaptrace probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum V8Function {
    CollectGarbage,
    StartObservablePause,
    StopObservablePause,
    SizeOfObjects,
    GarbageCollectionEpilogue,
    IncrementalMarkingStep,
    StartIncrementalMarking,
    CallGCPrologueCallbacks,
    CallGCEpilogueCallbacks,
    /// `V8::FatalProcessOutOfMemory`: the "JavaScript heap out of memory"
    /// abort (and V8's other fatal allocation failures).
    FatalProcessOutOfMemory,
}

impl V8Function {
    pub const ALL: [V8Function; 10] = [
        V8Function::CollectGarbage,
        V8Function::StartObservablePause,
        V8Function::StopObservablePause,
        V8Function::SizeOfObjects,
        V8Function::GarbageCollectionEpilogue,
        V8Function::IncrementalMarkingStep,
        V8Function::StartIncrementalMarking,
        V8Function::CallGCPrologueCallbacks,
        V8Function::CallGCEpilogueCallbacks,
        V8Function::FatalProcessOutOfMemory,
    ];

    /// Itanium-mangled name up to and including the `E` that closes the
    /// qualified name; the parameter list follows.
    pub fn mangled_prefix(self) -> &'static str {
        match self {
            V8Function::CollectGarbage => "_ZN2v88internal4Heap14CollectGarbageE",
            V8Function::StartObservablePause => "_ZN2v88internal8GCTracer20StartObservablePauseE",
            V8Function::StopObservablePause => "_ZN2v88internal8GCTracer19StopObservablePauseE",
            V8Function::SizeOfObjects => "_ZN2v88internal4Heap13SizeOfObjectsE",
            V8Function::GarbageCollectionEpilogue => "_ZN2v88internal4Heap25GarbageCollectionEpilogueE",
            V8Function::IncrementalMarkingStep => "_ZN2v88internal18IncrementalMarking4StepE",
            V8Function::StartIncrementalMarking => "_ZN2v88internal4Heap23StartIncrementalMarkingE",
            V8Function::CallGCPrologueCallbacks => "_ZN2v88internal4Heap23CallGCPrologueCallbacksE",
            V8Function::CallGCEpilogueCallbacks => "_ZN2v88internal4Heap23CallGCEpilogueCallbacksE",
            V8Function::FatalProcessOutOfMemory => "_ZN2v88internal2V823FatalProcessOutOfMemoryE",
        }
    }

    /// Readable name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            V8Function::CollectGarbage => "Heap::CollectGarbage",
            V8Function::StartObservablePause => "GCTracer::StartObservablePause",
            V8Function::StopObservablePause => "GCTracer::StopObservablePause",
            V8Function::SizeOfObjects => "Heap::SizeOfObjects",
            V8Function::GarbageCollectionEpilogue => "Heap::GarbageCollectionEpilogue",
            V8Function::IncrementalMarkingStep => "IncrementalMarking::Step",
            V8Function::StartIncrementalMarking => "Heap::StartIncrementalMarking",
            V8Function::CallGCPrologueCallbacks => "Heap::CallGCPrologueCallbacks",
            V8Function::CallGCEpilogueCallbacks => "Heap::CallGCEpilogueCallbacks",
            V8Function::FatalProcessOutOfMemory => "V8::FatalProcessOutOfMemory",
        }
    }
}

/// One symbol that matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedSymbol {
    pub name: String,
    /// Offset in the file, for a uprobe.
    pub file_offset: u64,
}

/// What was found in one ELF file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct V8Symbols {
    /// GNU build-id, hex; the cache key.
    pub build_id: Option<String>,
    pub functions: HashMap<V8Function, Vec<ResolvedSymbol>>,
}

impl V8Symbols {
    /// Whether this looks like V8 at all.
    pub fn has_v8(&self) -> bool {
        self.functions.contains_key(&V8Function::StartObservablePause)
            && self.functions.contains_key(&V8Function::StopObservablePause)
    }

    /// V8 >= 12.4 passes V8's own timestamps (and the collector) to the
    /// pause functions: `StopObservablePause(GarbageCollector, TimeTicks)`.
    pub fn passes_timestamps(&self) -> bool {
        self.functions
            .get(&V8Function::StopObservablePause)
            .is_some_and(|syms| syms.iter().any(|s| s.name.contains("TimeTicks")))
    }

    pub fn offsets(&self, f: V8Function) -> Vec<u64> {
        self.functions.get(&f).map(|v| v.iter().map(|s| s.file_offset).collect()).unwrap_or_default()
    }
}

#[derive(Debug, Error)]
pub enum SymbolError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a readable ELF file: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: object::Error,
    },
}

/// The GNU build-id of an ELF image, hex. Cheap: it reads the notes only.
pub fn build_id(data: &[u8]) -> Result<Option<String>, object::Error> {
    let file = object::File::parse(data)?;
    Ok(file.build_id()?.map(|id| id.iter().map(|b| format!("{b:02x}")).collect()))
}

/// Resolves the probed functions in an ELF image.
pub fn resolve(data: &[u8]) -> Result<V8Symbols, object::Error> {
    let file = object::File::parse(data)?;
    let build_id = build_id(data)?;
    let segments: Vec<(u64, u64, u64)> = file
        .segments()
        .filter_map(|s| {
            let (offset, size) = s.file_range();
            (size > 0).then_some((s.address(), size, offset))
        })
        .collect();
    let to_file_offset = |addr: u64| {
        segments
            .iter()
            .find(|(va, size, _)| addr >= *va && addr < va + size)
            .map(|(va, _, off)| addr - va + off)
    };

    let mut functions: HashMap<V8Function, Vec<ResolvedSymbol>> = HashMap::new();
    // .symtab when present (official builds), .dynsym too (Debian's
    // libnode keeps only that); the same symbol in both counts once.
    for sym in file.symbols().chain(file.dynamic_symbols()) {
        if sym.kind() != object::SymbolKind::Text || sym.address() == 0 {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        // `.cold` fragments are not function entries: never probe them.
        if name.contains(".cold") {
            continue;
        }
        let Some(f) = V8Function::ALL.into_iter().find(|f| name.starts_with(f.mangled_prefix())) else {
            continue;
        };
        let Some(file_offset) = to_file_offset(sym.address()) else { continue };
        let entry = functions.entry(f).or_default();
        if !entry.iter().any(|s| s.file_offset == file_offset) {
            entry.push(ResolvedSymbol { name: name.to_owned(), file_offset });
        }
    }
    Ok(V8Symbols { build_id, functions })
}

/// Where V8 lives in a process, and what was found there.
#[derive(Clone, Debug)]
pub struct ProcessV8 {
    /// Path to attach uprobes to (`/proc/PID/exe` or a map_files entry).
    pub attach_path: PathBuf,
    /// The file as the process sees it, for messages.
    pub display_path: String,
    pub symbols: Arc<V8Symbols>,
    /// (device, inode) of the file: uprobes are per inode, so this keys
    /// probes shared by every process of the binary.
    pub file: (u64, u64),
}

/// Resolutions per file identity and per build-id, so that many processes
/// of one binary, or of copies of it (container image layers), pay for one
/// walk of its symbol tables.
#[derive(Default)]
pub struct SymbolCache {
    by_file: HashMap<(u64, u64), Arc<V8Symbols>>,
    by_build_id: HashMap<String, Arc<V8Symbols>>,
}

/// Outcome of looking for V8 in a process.
pub enum V8Lookup {
    Found(ProcessV8),
    /// No candidate file has V8's GC functions. `build_ids` names the
    /// files looked at, so a stripped binary can be identified.
    NotFound {
        looked_at: Vec<(String, Option<String>)>,
    },
}

impl SymbolCache {
    /// Looks for V8 in the executable and in libraries named like libnode.
    pub fn find_in_process(&mut self, pid: u32) -> Result<V8Lookup, SymbolError> {
        let mut looked_at = Vec::new();
        for (attach_path, display_path) in candidates(pid) {
            let (file, symbols) = self.resolve_file(&attach_path)?;
            if symbols.has_v8() {
                return Ok(V8Lookup::Found(ProcessV8 { attach_path, display_path, symbols, file }));
            }
            looked_at.push((display_path, symbols.build_id.clone()));
        }
        Ok(V8Lookup::NotFound { looked_at })
    }

    /// Whether the executable of `pid` was resolved before (so finding V8
    /// in it costs no symbol-table walk). False if it cannot be read.
    pub fn knows_executable(&self, pid: u32) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/{pid}/exe"))
            .is_ok_and(|m| self.by_file.contains_key(&(m.dev(), m.ino())))
    }

    fn resolve_file(&mut self, path: &Path) -> Result<((u64, u64), Arc<V8Symbols>), SymbolError> {
        let open_err = |source| SymbolError::Open { path: path.to_owned(), source };
        let file = File::open(path).map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        use std::os::unix::fs::MetadataExt;
        let key = (meta.dev(), meta.ino());
        if let Some(hit) = self.by_file.get(&key) {
            return Ok((key, hit.clone()));
        }
        // SAFETY: the mapping is read-only and private to this function. A
        // binary being rewritten while mapped could change under us; the
        // parser then sees garbage and fails, it does not cause UB in safe
        // code that only reads bytes.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(open_err)?;
        let parse_err = |source| SymbolError::Parse { path: path.to_owned(), source };
        let id = build_id(&map).map_err(parse_err)?;
        let cached = id.as_ref().and_then(|id| self.by_build_id.get(id)).cloned();
        let symbols = match cached {
            Some(hit) => hit,
            None => Arc::new(resolve(&map).map_err(parse_err)?),
        };
        if let Some(id) = id {
            self.by_build_id.insert(id, symbols.clone());
        }
        self.by_file.insert(key, symbols.clone());
        Ok((key, symbols))
    }
}

/// Files that may hold V8: the executable, then mapped libraries whose name
/// contains "libnode" (Debian and other distribution builds).
fn candidates(pid: u32) -> Vec<(PathBuf, String)> {
    let exe_display =
        std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.display().to_string()).unwrap_or_default();
    let mut out = vec![(PathBuf::from(format!("/proc/{pid}/exe")), exe_display)];
    let Ok(maps) = procfs::process::Process::new(pid as i32).and_then(|p| p.maps()) else { return out };
    let mut seen = std::collections::HashSet::new();
    for m in maps {
        if let procfs::process::MMapPath::Path(path) = &m.pathname {
            let is_libnode = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains("libnode"));
            if is_libnode && m.offset == 0 && seen.insert(path.clone()) {
                let (start, end) = m.address;
                out.push((
                    PathBuf::from(format!("/proc/{pid}/map_files/{start:x}-{end:x}")),
                    path.display().to_string(),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_of_a_binary_are_resolved_once_by_build_id() {
        // Two copies of one ELF file (this test binary: it has a build-id).
        let me = std::env::current_exe().unwrap();
        let dir = std::env::temp_dir().join(format!("heaptrace-symcache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::copy(&me, &a).unwrap();
        std::fs::copy(&me, &b).unwrap();
        let mut cache = SymbolCache::default();
        let (_, first) = cache.resolve_file(&a).unwrap();
        let (_, second) = cache.resolve_file(&b).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(first.build_id.is_some());
        assert!(Arc::ptr_eq(&first, &second), "the copy was resolved again");
        assert_eq!(cache.by_file.len(), 2);
        assert_eq!(cache.by_build_id.len(), 1);
    }

    #[test]
    fn prefixes_match_only_the_intended_names() {
        let names = [
            ("_ZN2v88internal8GCTracer20StartObservablePauseEv", Some(V8Function::StartObservablePause)),
            (
                "_ZN2v88internal8GCTracer19StopObservablePauseENS0_16GarbageCollectorENS_4base9TimeTicksE",
                Some(V8Function::StopObservablePause),
            ),
            ("_ZN2v88internal16third_party_heap4Heap14CollectGarbageEv", None),
            ("_ZN5cppgc8internal4Heap14CollectGarbageENS0_8GCConfigE", None),
            (
                "_ZZN2v88internal4Heap14CollectGarbageENS0_15AllocationSpaceEE29trace_event_unique_atomic1",
                None,
            ),
            ("_ZN2v88internal4Heap13SizeOfObjectsEv", Some(V8Function::SizeOfObjects)),
        ];
        for (name, want) in names {
            let got = V8Function::ALL.into_iter().find(|f| name.starts_with(f.mangled_prefix()));
            assert_eq!(got, want, "{name}");
        }
    }
}
