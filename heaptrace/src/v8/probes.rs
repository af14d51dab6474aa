//! The one table of V8 probes: which V8 function, entry or return, which
//! eBPF program (heaptrace-ebpf/src/gc.rs), and on which V8 versions. The
//! attach code places exactly these; the tests read the same table, and a
//! unit test holds it against the programs in the built eBPF object.

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
    /// qualified name; the parameter list follows. Matching on this prefix
    /// finds the function whatever its signature in a given V8 version.
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

    /// The function whose mangled name this is, if heaptrace probes it.
    pub fn from_mangled(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| name.starts_with(f.mangled_prefix()))
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

/// Where on the function the program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// At entry (a uprobe): the arguments are readable.
    Entry,
    /// At return (a uretprobe): the return value is readable.
    Return,
}

/// The two generations of V8's GC tracer that heaptrace tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generation {
    /// V8 before 12.4 (Node 18, 20): the pause functions take no arguments,
    /// so pauses are timed in the kernel and the collector comes from
    /// `Heap::GarbageCollectionEpilogue`.
    Legacy,
    /// V8 12.4 and later (Node 22+): `StartObservablePause(TimeTicks)` and
    /// `StopObservablePause(GarbageCollector, TimeTicks)` pass V8's own
    /// timestamps and the collector.
    Timestamps,
}

/// Which V8 versions a probe applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Versions {
    All,
    Only(Generation),
}

/// One probe: `program` runs at `hook` of `function`, on `versions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub function: V8Function,
    pub hook: Hook,
    /// The eBPF program's name in heaptrace-ebpf.
    pub program: &'static str,
    pub versions: Versions,
}

impl Probe {
    pub fn applies_to(&self, generation: Generation) -> bool {
        match self.versions {
            Versions::All => true,
            Versions::Only(g) => g == generation,
        }
    }
}

const fn probe(function: V8Function, hook: Hook, program: &'static str, versions: Versions) -> Probe {
    Probe { function, hook, program, versions }
}

use Generation::{Legacy, Timestamps};
use Hook::{Entry, Return};
use V8Function as F;
use Versions::{All, Only};

/// Every V8 probe, in the order they are attached. See
/// heaptrace-ebpf/src/gc.rs for what each program does.
pub const PROBES: [Probe; 14] = [
    // The reason (arg 2).
    probe(F::CollectGarbage, Entry, "gc_collect_garbage", All),
    // One pause is StartObservablePause → StopObservablePause.
    probe(F::StartObservablePause, Entry, "gc_pause_start_v8ts", Only(Timestamps)),
    probe(F::StartObservablePause, Entry, "gc_pause_start_legacy", Only(Legacy)),
    probe(F::StopObservablePause, Entry, "gc_pause_stop_v8ts", Only(Timestamps)),
    probe(F::StopObservablePause, Entry, "gc_pause_stop_legacy", Only(Legacy)),
    // Heap used before and after: its first and last return inside a pause.
    probe(F::SizeOfObjects, Return, "gc_size_of_objects_return", All),
    // The collector, where StopObservablePause does not pass it.
    probe(F::GarbageCollectionEpilogue, Entry, "gc_epilogue_legacy", Only(Legacy)),
    // Work outside pauses, counted in the kernel.
    probe(F::IncrementalMarkingStep, Entry, "gc_marking_step", All),
    probe(F::IncrementalMarkingStep, Return, "gc_marking_step_return", All),
    probe(F::StartIncrementalMarking, Entry, "gc_marking_start", All),
    probe(F::StartIncrementalMarking, Return, "gc_marking_start_return", All),
    probe(F::CallGCPrologueCallbacks, Entry, "gc_prologue_callbacks", All),
    probe(F::CallGCEpilogueCallbacks, Entry, "gc_epilogue_callbacks", All),
    // "JavaScript heap out of memory".
    probe(F::FatalProcessOutOfMemory, Entry, "gc_fatal_oom", All),
];

/// The distinct programs of [`PROBES`], each once: what is loaded before
/// the first attach.
pub fn programs() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for p in PROBES {
        if !names.contains(&p.program) {
            names.push(p.program);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use object::{Object, ObjectSection, ObjectSymbol};

    use super::*;

    /// The uprobe and uretprobe programs of the built eBPF object, by name.
    fn programs_in_object() -> BTreeMap<String, Hook> {
        let data = crate::kernel::EBPF_OBJECT;
        assert!(!data.is_empty(), "built with AYA_BUILD_SKIP: run scripts/setup.sh and build normally");
        let file = object::File::parse(data).expect("the eBPF object is ELF");
        let mut out = BTreeMap::new();
        for sym in file.symbols() {
            let Some(section) = sym.section_index().and_then(|i| file.section_by_index(i).ok()) else {
                continue;
            };
            let hook = match section.name() {
                Ok("uprobe") => Hook::Entry,
                Ok("uretprobe") => Hook::Return,
                _ => continue,
            };
            if sym.kind() == object::SymbolKind::Text {
                out.insert(sym.name().unwrap().to_owned(), hook);
            }
        }
        out
    }

    #[test]
    fn the_table_matches_the_programs_in_the_ebpf_object() {
        let in_object = programs_in_object();
        for p in PROBES {
            assert_eq!(
                in_object.get(p.program),
                Some(&p.hook),
                "{}: not in the object as a {:?}",
                p.program,
                p.hook
            );
        }
        let in_table: Vec<&str> = programs();
        for name in in_object.keys() {
            assert!(in_table.contains(&name.as_str()), "{name} is in the eBPF object but no probe uses it");
        }
        assert_eq!(in_table.len(), in_object.len());
    }

    #[test]
    fn each_generation_gets_one_pause_bracket() {
        for generation in [Generation::Legacy, Generation::Timestamps] {
            let on =
                |f: V8Function| PROBES.iter().filter(|p| p.function == f && p.applies_to(generation)).count();
            assert_eq!(on(V8Function::StartObservablePause), 1, "{generation:?}");
            assert_eq!(on(V8Function::StopObservablePause), 1, "{generation:?}");
        }
        // Every probed function is in V8Function::ALL, and every one of those is probed.
        for f in V8Function::ALL {
            assert!(PROBES.iter().any(|p| p.function == f), "{f:?} is never probed");
        }
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
            assert_eq!(V8Function::from_mangled(name), want, "{name}");
        }
    }
}
