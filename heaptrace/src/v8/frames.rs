//! Naming a JS frame from outside the process: the kernel records the word
//! at `fp - 16` of each frame (a JS frame's `JSFunction`), and this reads,
//! by V8's postmortem metadata, `JSFunction` → `SharedFunctionInfo` → its
//! `ScopeInfo` (name, start position) and `Script` (file, line ends).
//!
//! What it gives is what `--perf-basic-prof` and DevTools show: the
//! function's debug name (its name, else the name the parser inferred, else
//! `(anonymous)`), the script's name, and the 1-based line the function
//! starts on.
//!
//! Nothing is guessed: the word must point to an object whose map says
//! JSFunction, and each object after it must have the type V8's layout
//! gives. Anything else is an [`Unnamed`] reason, which callers count.
//!
//! A per-process [`JsFrameNamer`] keeps what it read per
//! SharedFunctionInfo and per Script. A hit is checked against the object
//! (one read of its header): a compacting GC may have put another object
//! at the address.

use std::{collections::HashMap, sync::Arc};

use thiserror::Error;

use super::{
    heap::Heap,
    memory::{Memory, ProcessMemory},
    postmortem::Postmortem,
    scope_info,
    script::{MAX_NAME, Script},
};
use crate::core::sites::{Frame, FrameKind};

/// How DevTools (and heaptrace) show a function without a name.
pub const ANONYMOUS: &str = "(anonymous)";

/// Functions and scripts remembered per process, at most; past that the
/// cache starts over.
const MAX_CACHED: usize = 1 << 16;

/// Why a frame's function slot could not be named.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq, Hash)]
pub enum Unnamed {
    /// The binary has no usable postmortem metadata (stripped, or a layout
    /// heaptrace does not read): for callers that count every reason.
    #[error("no usable V8 postmortem metadata")]
    NoMetadata,
    /// The word is no tagged heap pointer (a native frame's local, a
    /// frame-type marker, or 0).
    #[error("not a tagged heap pointer")]
    NotHeapObject,
    /// The process's memory could not be read there (it exited, or the word
    /// was a pointer to nowhere).
    #[error("unreadable memory")]
    Unreadable,
    /// A heap object, but not a JSFunction.
    #[error("not a JSFunction")]
    NotJsFunction,
    /// An object on the way does not have the type or shape V8's layout
    /// gives it: the layout is not understood, or the heap changed while
    /// being read.
    #[error("unexpected {0}")]
    Unexpected(&'static str),
}

impl Unnamed {
    /// A short key for counting reasons.
    pub fn key(&self) -> &'static str {
        match self {
            Unnamed::NoMetadata => "no_metadata",
            Unnamed::NotHeapObject => "not_heap_object",
            Unnamed::Unreadable => "unreadable",
            Unnamed::NotJsFunction => "not_js_function",
            Unnamed::Unexpected(_) => "unexpected",
        }
    }
}

/// Whether a pc in this builtin (named as its symbol, `Builtins_…`)
/// executes inside an interpreted JS function's frame: the interpreter's
/// entry trampolines and every bytecode handler (`<Bytecode>[Wide|
/// ExtraWide]Handler`) run with fp = that function's frame, so the word at
/// fp - 16 is its JSFunction. `BaselineOrInterpreterEnterAt*` resume a
/// function's frame in baseline code or the interpreter (V8 <= 11).
pub fn is_interpreter_frame_builtin(name: &str) -> bool {
    let Some(name) = name.strip_prefix("Builtins_") else { return false };
    const ENTRIES: [&str; 8] = [
        "InterpreterEntryTrampoline",
        "InterpreterEntryTrampolineForProfiling",
        "InterpreterEnterAtBytecode",
        "InterpreterEnterAtNextBytecode",
        "BaselineOrInterpreterEnterAtBytecode",
        "BaselineOrInterpreterEnterAtNextBytecode",
        // Their names before V8 9.x.
        "InterpreterEnterBytecodeAdvance",
        "InterpreterEnterBytecodeDispatch",
    ];
    // JS builtins that happen to end in "Handler" (promise reactions).
    const NOT_BYTECODES: [&str; 2] =
        ["AtomicsMutexAsyncUnlockRejectHandler", "AtomicsMutexAsyncUnlockResolveHandler"];
    ENTRIES.contains(&name)
        || (name.len() > "Handler".len() && name.ends_with("Handler") && !NOT_BYTECODES.contains(&name))
}

/// One SharedFunctionInfo, named.
struct Function {
    /// The header words it was named from (map, name_or_scope_info, script).
    words: [u64; 3],
    frame: Frame,
}

/// What a namer has done, for measurements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NamerStats {
    /// Frames named from the cache (after a check of the function).
    pub hits: u64,
    /// Frames named by reading the function, its names and its script.
    pub misses: u64,
    /// Memory reads made in all.
    pub reads: u64,
}

/// Names JS frames of one process, with a cache per SharedFunctionInfo and
/// per Script.
pub struct JsFrameNamer<M = ProcessMemory> {
    heap: Heap<M>,
    functions: HashMap<u64, Function>,
    scripts: HashMap<u64, Script>,
    stats: NamerStats,
}

impl JsFrameNamer<ProcessMemory> {
    /// A namer for process `pid`, whose V8 is described by `postmortem`.
    pub fn new(pid: u32, postmortem: Arc<Postmortem>) -> Self {
        Self::with_memory(ProcessMemory::new(pid), postmortem)
    }
}

impl<M: Memory> JsFrameNamer<M> {
    /// A namer reading `memory` (tests give a fake heap).
    pub fn with_memory(memory: M, postmortem: Arc<Postmortem>) -> Self {
        Self {
            heap: Heap::new(memory, postmortem),
            functions: HashMap::new(),
            scripts: HashMap::new(),
            stats: NamerStats::default(),
        }
    }

    pub fn stats(&self) -> NamerStats {
        NamerStats { reads: self.heap.reads, ..self.stats }
    }

    /// Forgets everything read (e.g. when the process exec'd).
    pub fn clear(&mut self) {
        self.heap.clear();
        self.functions.clear();
        self.scripts.clear();
    }

    /// Names the function whose JSFunction is `function_slot` (the word at
    /// fp - 16 of a frame).
    pub fn name(&mut self, function_slot: u64) -> Result<Frame, Unnamed> {
        if !self.heap.is_heap_object(function_slot) {
            return Err(Unnamed::NotHeapObject);
        }
        // The map and the SharedFunctionInfo in one read.
        let o = self.heap.postmortem().offsets;
        let (map_at, shared_at) = (o.heap_object_map / 8, o.js_function_shared / 8);
        let words = self.heap.words(self.heap.untag(function_slot), (map_at.max(shared_at) + 1) as usize)?;
        let ty = self.heap.map_type(words[map_at as usize])?;
        if !self.heap.postmortem().types.js_function.contains(&ty) {
            return Err(Unnamed::NotJsFunction);
        }
        let shared = words[shared_at as usize];
        if !self.heap.is_heap_object(shared) {
            return Err(Unnamed::Unexpected("SharedFunctionInfo"));
        }
        let words = self.shared_header(shared)?;
        if let Some(f) = self.functions.get(&shared)
            && f.words == words
        {
            self.stats.hits += 1;
            return Ok(f.frame.clone());
        }
        self.stats.misses += 1;
        let frame = self.name_shared(words)?;
        if self.functions.len() >= MAX_CACHED {
            self.functions.clear();
        }
        self.functions.insert(shared, Function { words, frame: frame.clone() });
        Ok(frame)
    }

    /// A SharedFunctionInfo's map, name_or_scope_info and script words.
    fn shared_header(&mut self, shared: u64) -> Result<[u64; 3], Unnamed> {
        let o = self.heap.postmortem().offsets;
        let fields = [o.heap_object_map, o.sfi_name_or_scope_info, o.sfi_script];
        let high = fields.iter().max().copied().unwrap_or(0);
        let words = self.heap.words(self.heap.untag(shared), (high / 8 + 1) as usize)?;
        Ok(fields.map(|offset| words[(offset / 8) as usize]))
    }

    fn name_shared(&mut self, [map, name_or_scope_info, script]: [u64; 3]) -> Result<Frame, Unnamed> {
        let types = self.heap.postmortem().types.clone();
        if self.heap.map_type(map)? != types.shared_function_info {
            return Err(Unnamed::Unexpected("SharedFunctionInfo"));
        }
        // `DebugName()`: the name, else the inferred name; and the start.
        let (names, start) = if self.heap.smi(name_or_scope_info) == Some(0) {
            // kNoSharedNameSentinel: no name, nor positions here.
            (Vec::new(), None)
        } else {
            let ty = self.heap.type_of(name_or_scope_info)?;
            if ty == types.scope_info {
                let facts = scope_info::read(&mut self.heap, name_or_scope_info)?;
                (facts.name.into_iter().chain(facts.inferred).collect(), facts.start)
            } else if self.heap.is_string_type(ty) {
                (vec![name_or_scope_info], None)
            } else {
                return Err(Unnamed::Unexpected("name_or_scope_info"));
            }
        };
        let mut function = String::new();
        for name in names {
            function = self.heap.string(name, MAX_NAME)?;
            if !function.is_empty() {
                break;
            }
        }
        if function.is_empty() {
            function = ANONYMOUS.to_owned();
        }
        let (file, line) = self.script(script, start)?;
        Ok(Frame { function, file, line, kind: FrameKind::Js, build_id: None })
    }

    /// The script's name and the line `start` is on. A function without a
    /// script (a builtin's, or one being debugged on V8 < 11) has neither.
    fn script(&mut self, tagged: u64, start: Option<u32>) -> Result<(Option<String>, Option<u32>), Unnamed> {
        if !self.heap.is_heap_object(tagged)
            || self.heap.type_of(tagged)? != self.heap.postmortem().types.script
        {
            return Ok((None, None));
        }
        let words = super::script::header(&mut self.heap, tagged)?;
        let script = match self.scripts.get_mut(&tagged) {
            Some(s) if s.words == words => s,
            _ => {
                let s = Script::read(&mut self.heap, tagged)?;
                if self.scripts.len() >= MAX_CACHED {
                    self.scripts.clear();
                }
                self.scripts.entry(tagged).insert_entry(s).into_mut()
            }
        };
        let line = match start {
            // A source too long to read, or unreadable, costs the line only.
            Some(start) => script.line(&mut self.heap, start).ok(),
            None => None,
        };
        Ok((script.name.clone(), line))
    }
}

#[cfg(test)]
#[path = "frames_tests.rs"]
mod tests;
