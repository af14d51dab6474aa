//! Per-binary data: what one ELF file holds of V8 (the file offsets of the
//! functions heaptrace probes, and which generation of V8's GC tracer they
//! belong to), and attaching the probe table to a process of it, which
//! gives a per-process [`V8Instance`].
//!
//! Functions are matched on their mangled name up to the parameter list,
//! because V8 changes signatures between versions; the parameter list then
//! tells which variant a version has (V8 >= 12.4 passes timestamps).

use std::{collections::HashMap, num::NonZeroU32, path::Path, sync::Arc};

use object::{Object, ObjectSegment, ObjectSymbol};

use super::{
    limit::MaxReservedFn,
    postmortem::{Postmortem, PostmortemError, Symbols},
    probes::{Generation, PROBES, V8Function, programs},
};
use crate::kernel::{KernelError, Tracer, UprobeLink, UprobeScope};

/// One symbol that matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedSymbol {
    pub name: String,
    /// Offset in the file, for a uprobe.
    pub file_offset: u64,
}

/// What was found in one ELF file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct V8Binary {
    /// GNU build-id, hex; a cache key, and what names a stripped binary.
    pub build_id: Option<String>,
    pub functions: HashMap<V8Function, Vec<ResolvedSymbol>>,
    /// `Heap::MaxReserved()`, which gives V8's heap limit ([`super::limit`]).
    pub max_reserved: Option<MaxReservedFn>,
    /// Position-independent (a shared library, or a PIE executable): its
    /// addresses in a process are the file's plus where it was loaded.
    pub relocatable: bool,
    /// V8's postmortem metadata, for naming JS frames; None when the file
    /// has none that heaptrace can use (stripped, or another layout).
    pub postmortem: Option<Arc<Postmortem>>,
    /// Why `postmortem` is None.
    pub postmortem_error: Option<PostmortemError>,
    /// Node's own code is here (symbols in namespace `node`), not merely V8
    /// (another embedder, such as Deno or a browser, has V8 but no SIGUSR1
    /// inspector).
    pub node: bool,
    /// The link-time address of libuv's `uv__signal_tree` (a local symbol:
    /// only in `.symtab`), where every active signal watcher is kept; None
    /// when the file has no libuv or no `.symtab` (Debian's libnode links a
    /// stripped libuv.so). `heap::inspector` reads it.
    pub uv_signal_tree: Option<u64>,
    /// The lowest address of its loadable segments, page-aligned: where a
    /// relocatable file's first mapping (file offset 0) starts, before the
    /// load bias ([`super::ProcessBinary::load_bias`]).
    pub image_base: u64,
}

/// What attaching the probes to a process did, for people.
#[derive(Debug, Clone)]
pub struct AttachReport {
    /// Whether V8 passes its own pause timestamps (V8 >= 12.4).
    pub v8_timestamps: bool,
    /// Probe points attached, as "Function (program)".
    pub attached: Vec<String>,
    /// Functions not found (the figure they feed is missing).
    pub missing: Vec<&'static str>,
}

/// The probes placed for one process (or, per binary, for all of them);
/// [`V8Instance::detach`] removes them.
#[derive(Debug)]
pub struct V8Instance {
    links: Vec<UprobeLink>,
    pub report: AttachReport,
}

impl V8Instance {
    pub fn detach(self, kernel: &mut Tracer) {
        for link in self.links {
            kernel.detach_uprobe(link);
        }
    }
}

impl V8Binary {
    /// Whether this looks like V8 at all.
    pub fn has_v8(&self) -> bool {
        self.functions.contains_key(&V8Function::StartObservablePause)
            && self.functions.contains_key(&V8Function::StopObservablePause)
    }

    /// Which generation of V8's GC tracer: V8 >= 12.4 passes its own
    /// timestamps (and the collector) to the pause functions,
    /// `StopObservablePause(GarbageCollector, TimeTicks)`.
    pub fn generation(&self) -> Generation {
        let passes_timestamps = self
            .functions
            .get(&V8Function::StopObservablePause)
            .is_some_and(|syms| syms.iter().any(|s| s.name.contains("TimeTicks")));
        if passes_timestamps { Generation::Timestamps } else { Generation::Legacy }
    }

    pub fn offsets(&self, f: V8Function) -> Vec<u64> {
        self.functions.get(&f).map(|v| v.iter().map(|s| s.file_offset).collect()).unwrap_or_default()
    }

    /// Attaches every probe of the table that applies to this binary's
    /// generation, at the file offsets found: to the process `pid` alone,
    /// or (`pid` None) to every process that runs `file`.
    pub fn attach(
        &self,
        kernel: &mut Tracer,
        file: &Path,
        pid: Option<u32>,
    ) -> Result<V8Instance, KernelError> {
        kernel.load_uprobes(&programs())?;
        let scope = pid.and_then(NonZeroU32::new).map_or(UprobeScope::AllProcesses, UprobeScope::Process);
        let generation = self.generation();
        let mut instance = V8Instance {
            links: Vec::new(),
            report: AttachReport {
                v8_timestamps: generation == Generation::Timestamps,
                attached: Vec::new(),
                missing: Vec::new(),
            },
        };
        for probe in PROBES.iter().filter(|p| p.applies_to(generation)) {
            let offsets = self.offsets(probe.function);
            let name = probe.function.name();
            if offsets.is_empty() {
                if !instance.report.missing.contains(&name) {
                    instance.report.missing.push(name);
                }
                continue;
            }
            match kernel.attach_uprobe(probe.program, file, &offsets, scope) {
                Ok(link) => instance.links.push(link),
                Err(e) => {
                    // Nothing half-attached stays behind.
                    instance.detach(kernel);
                    return Err(e);
                }
            }
            instance.report.attached.push(format!("{name} ({})", probe.program));
        }
        Ok(instance)
    }
}

/// The GNU build-id of an ELF image, hex. Cheap: it reads the notes only.
pub fn build_id(data: &[u8]) -> Result<Option<String>, object::Error> {
    let file = object::File::parse(data)?;
    Ok(file.build_id()?.map(|id| id.iter().map(|b| format!("{b:02x}")).collect()))
}

/// Resolves the probed functions in an ELF image.
pub fn resolve(data: &[u8]) -> Result<V8Binary, object::Error> {
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
    let mut max_reserved = None;
    // The metadata's symbols are taken on the same walk: node has some
    // 150,000 symbols, and a process waits while they are read.
    let mut metadata = Symbols::default();
    // .symtab when present (official builds), .dynsym too (Debian's
    // libnode keeps only that); the same symbol in both counts once.
    let mut node = false;
    let mut uv_signal_tree = None;
    for sym in file.symbols().chain(file.dynamic_symbols()) {
        if sym.kind() == object::SymbolKind::Data {
            if uv_signal_tree.is_none() && sym.name().is_ok_and(is_uv_signal_tree) {
                uv_signal_tree = Some(sym.address());
                continue;
            }
            metadata.offer(&file, &sym);
            continue;
        }
        if sym.kind() != object::SymbolKind::Text || sym.address() == 0 {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        node = node || name.starts_with("_ZN4node");
        // `.cold` fragments are not function entries: never probe them.
        if name.contains(".cold") {
            continue;
        }
        if max_reserved.is_none()
            && let Some(offset) = to_file_offset(sym.address())
            && let Some(f) = MaxReservedFn::from_symbol(data, name, sym.address(), sym.size(), offset)
        {
            max_reserved = Some(f);
            continue;
        }
        let Some(f) = V8Function::from_mangled(name) else { continue };
        let Some(file_offset) = to_file_offset(sym.address()) else { continue };
        let entry = functions.entry(f).or_default();
        if !entry.iter().any(|s| s.file_offset == file_offset) {
            entry.push(ResolvedSymbol { name: name.to_owned(), file_offset });
        }
    }
    let relocatable = file.kind() == object::ObjectKind::Dynamic;
    let (postmortem, postmortem_error) = match Postmortem::from_symbols(&metadata) {
        Ok(p) => (Some(Arc::new(p)), None),
        Err(e) => (None, Some(e)),
    };
    let image_base = segments.iter().map(|&(va, _, _)| va).min().unwrap_or(0) & !0xfff;
    Ok(V8Binary {
        build_id,
        functions,
        max_reserved,
        relocatable,
        postmortem,
        postmortem_error,
        node,
        uv_signal_tree,
        image_base,
    })
}

/// libuv's tree of signal watchers: `uv__signal_tree` (a file-local
/// static), or, as newer compilers name a static they have moved,
/// `uv__signal_tree.0` (Node 26).
pub fn is_uv_signal_tree(name: &str) -> bool {
    name.strip_prefix("uv__signal_tree").is_some_and(|rest| {
        rest.is_empty() || rest.strip_prefix('.').is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(stop_name: &str) -> V8Binary {
        let sym = |name: &str| vec![ResolvedSymbol { name: name.into(), file_offset: 1 }];
        V8Binary {
            build_id: None,
            functions: [
                (V8Function::StartObservablePause, sym("_ZN2v88internal8GCTracer20StartObservablePauseEv")),
                (V8Function::StopObservablePause, sym(stop_name)),
            ]
            .into_iter()
            .collect(),
            ..V8Binary::default()
        }
    }

    #[test]
    fn the_signature_tells_the_generation() {
        let new = binary(
            "_ZN2v88internal8GCTracer19StopObservablePauseENS0_16GarbageCollectorENS_4base9TimeTicksE",
        );
        assert!(new.has_v8());
        assert_eq!(new.generation(), Generation::Timestamps);
        let old = binary("_ZN2v88internal8GCTracer19StopObservablePauseEv");
        assert_eq!(old.generation(), Generation::Legacy);
        assert!(!V8Binary::default().has_v8());
    }

    #[test]
    fn the_signal_tree_is_matched_with_a_compiler_suffix() {
        assert!(is_uv_signal_tree("uv__signal_tree"));
        assert!(is_uv_signal_tree("uv__signal_tree.0"));
        assert!(is_uv_signal_tree("uv__signal_tree.12"));
        assert!(!is_uv_signal_tree("uv__signal_tree_x"));
        assert!(!is_uv_signal_tree("uv__signal_tree.cold"));
        assert!(!is_uv_signal_tree("uv__signal_global_init_guard"));
    }

    #[test]
    fn an_elf_file_without_v8_resolves_to_nothing() {
        // This test binary: ELF, with a build-id, and no V8 in it.
        let data = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let b = resolve(&data).unwrap();
        assert!(b.build_id.is_some());
        assert!(!b.has_v8() && b.functions.is_empty() && b.max_reserved.is_none());
        assert!(!b.node && b.uv_signal_tree.is_none());
        // (It holds two metadata-like symbols, of postmortem's tests.)
        assert!(b.postmortem.is_none() && b.postmortem_error.is_some());
        assert!(resolve(b"not an ELF file").is_err());
    }
}
