//! The collector's stack namer: turns a kernel stack into named frames,
//! once per stack key and process.
//!
//! Each frame's address is looked up in the process's files first
//! ([`NativeSymbolizer`]). A frame is then tried as a JS frame, by the word
//! the kernel read at its `fp - 16` (V8 keeps a JS frame's `JSFunction`
//! there), when its code can run JS functions:
//! - anonymous executable memory: V8's JIT-compiled code;
//! - V8's interpreter: its entry trampolines and bytecode handlers
//!   (`Builtins_InterpreterEntryTrampoline`, `Builtins_*Handler`) run with
//!   the interpreted function's frame;
//! - an address in a file without a symbol for it (Debian's `libnode.so`
//!   has no `Builtins_*` symbols), kept only if the function has a script.
//!
//! The JS namer checks the object is a `JSFunction` before it reads a name,
//! so a word that is not one leaves the frame `[JS]` (or its native name),
//! never a wrong name.

use std::collections::{HashMap, HashSet};

use heaptrace_common::StackTrace;

use super::native::{NativeName, NativeSymbolizer, lookup_addresses};
use crate::{
    core::sites::{Frame, FrameKind},
    kernel::StackStats,
    v8::frames::is_interpreter_frame_builtin,
};

/// How naming went, for `-v`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NamingStats {
    /// Stacks named.
    pub stacks: u64,
    /// Stacks the kernel's LRU map had evicted before they were read.
    pub lost: u64,
    /// JS frames named, and JS frames left as `[JS]`.
    pub js_named: u64,
    pub js_unnamed: u64,
    /// Frames in no file and no JS function.
    pub unknown: u64,
    /// JS frames also named by the process's perf map (`--perf-basic-prof`),
    /// and of those, the ones whose names differ.
    pub perf_map_checked: u64,
    pub perf_map_differed: u64,
    /// Kernel scans past code without frame pointers whose result was not
    /// in code (the stack is cut there).
    pub scans_rejected: u64,
}

/// What the JS side answers for one frame: a named frame, or why not.
pub type JsAnswer = Result<Frame, String>;

/// Names JS frames of a process: `name(pid, function_slot)`, and, where the
/// process writes a perf map, `perf_map(pid, pc)` for the same frame.
pub trait JsNamer {
    fn name(&mut self, pid: u32, function_slot: u64) -> JsAnswer;
    fn perf_map(&mut self, pid: u32, pc: u64) -> Option<String>;
}

/// Marks where the kernel's walk scanned past code without frame pointers.
pub const SCANNED_MARK: &str = "[frames without frame pointers]";

/// Native names kept per process before the cache starts over.
const MAX_CACHED_ADDRESSES: usize = 65_536;

#[derive(Default)]
pub struct StackNamer {
    native: NativeSymbolizer,
    /// Per process: address looked up → its native name.
    native_cache: HashMap<u32, HashMap<u64, NativeName>>,
    known: HashMap<u32, HashSet<u64>>,
    pub stats: NamingStats,
}

impl StackNamer {
    /// Whether stack `id` of `pid` was named already.
    pub fn is_known(&self, pid: u32, id: u64) -> bool {
        self.known.get(&pid).is_some_and(|ids| ids.contains(&id))
    }

    /// Names a stack of `pid` (None: the kernel had evicted it) and
    /// remembers its key.
    pub fn name(
        &mut self,
        pid: u32,
        id: u64,
        trace: Option<&StackTrace>,
        js: &mut dyn JsNamer,
    ) -> Vec<Frame> {
        self.name_many(pid, &[(id, trace.copied())], js).pop().unwrap_or_default()
    }

    /// Names several new stacks of one process at once: their addresses
    /// are looked up in one pass over the process's mappings (reading
    /// `/proc/PID/maps` is most of a lookup's cost). Remembers their keys.
    pub fn name_many(
        &mut self,
        pid: u32,
        stacks: &[(u64, Option<StackTrace>)],
        js: &mut dyn JsNamer,
    ) -> Vec<Vec<Frame>> {
        let mut addrs = Vec::new();
        for (id, trace) in stacks {
            self.known.entry(pid).or_default().insert(*id);
            if let Some(t) = trace {
                addrs.extend(lookup_addresses(&t.pcs[..(t.len as usize).min(t.pcs.len())]));
            }
        }
        let mut natives = self.native_names(pid, &addrs);
        let mut out = Vec::with_capacity(stacks.len());
        let mut rest = natives.as_mut_slice();
        for (_, trace) in stacks {
            let Some(trace) = trace else {
                self.stats.lost += 1;
                out.push(vec![Frame::unknown()]);
                continue;
            };
            let len = (trace.len as usize).min(trace.pcs.len());
            let (mine, after) = std::mem::take(&mut rest).split_at_mut(len);
            rest = after;
            out.push(self.frames_of(pid, trace, mine.to_vec(), js));
        }
        out
    }

    /// The native names of `addrs`, from the per-process cache where it has
    /// them. New stacks mostly repeat known return addresses (a closure made
    /// per request is a new function word on the same code), so most
    /// batches need no lookup, and no read of `/proc/PID/maps`, at all.
    fn native_names(&mut self, pid: u32, addrs: &[u64]) -> Vec<NativeName> {
        let cache = self.native_cache.entry(pid).or_default();
        if cache.len() > MAX_CACHED_ADDRESSES {
            cache.clear();
        }
        let mut missing: Vec<u64> = addrs.iter().copied().filter(|a| !cache.contains_key(a)).collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            match self.native.symbolize(pid, &missing) {
                Ok(names) => cache.extend(missing.into_iter().zip(names)),
                // The process is gone: nothing to cache.
                Err(_) => return vec![NativeName::Unmapped; addrs.len()],
            }
        }
        addrs.iter().map(|a| cache.get(a).cloned().unwrap_or(NativeName::Unmapped)).collect()
    }

    /// One stack's frames from its addresses' native names.
    fn frames_of(
        &mut self,
        pid: u32,
        trace: &StackTrace,
        mut natives: Vec<NativeName>,
        js: &mut dyn JsNamer,
    ) -> Vec<Frame> {
        self.stats.stacks += 1;
        let pcs = &trace.pcs[..natives.len()];
        let scanned_from = trace.scanned_from as usize;
        // The kernel's scan past code without frame pointers found a word
        // that only looked like a frame record if the return address it
        // gives is in no code: what follows it would be guesses.
        let scan_missed = scanned_from > 0
            && natives.get(scanned_from).is_some_and(|n| {
                matches!(n, NativeName::Unmapped | NativeName::Anonymous { executable: false })
            });
        if scan_missed {
            natives.truncate(scanned_from);
            self.stats.scans_rejected += 1;
        }
        let mut frames = Vec::with_capacity(natives.len() + 1);
        for (i, native) in natives.iter().enumerate() {
            if i > 0 && i == scanned_from {
                frames.push(Frame { function: SCANNED_MARK.into(), ..Frame::unknown() });
            }
            frames.push(self.frame(pid, pcs[i], trace.slots[i], native, js));
        }
        if scan_missed {
            frames.push(Frame { function: SCANNED_MARK.into(), ..Frame::unknown() });
        }
        frames
    }

    fn frame(&mut self, pid: u32, pc: u64, slot: u64, native: &NativeName, js: &mut dyn JsNamer) -> Frame {
        let named = match native {
            NativeName::Anonymous { executable: true } => true,
            NativeName::Named { function, builtin: true, .. } => is_interpreter_frame_builtin(function),
            NativeName::InFile { .. } => {
                // Maybe a builtin without a symbol: a JS frame only if the
                // function read there belongs to a script.
                return match js.name(pid, slot) {
                    Ok(frame) if frame.file.is_some() => self.js_frame(pid, pc, frame, js),
                    _ => native.to_frame(),
                };
            }
            _ => false,
        };
        if !named {
            let frame = native.to_frame();
            if !frame.is_named() && frame.build_id.is_none() {
                self.stats.unknown += 1;
            }
            return frame;
        }
        match js.name(pid, slot) {
            Ok(frame) => self.js_frame(pid, pc, frame, js),
            Err(_) => {
                // The perf map, when the process writes one, is the second
                // source for a JIT frame the metadata could not name.
                if let Some(name) = js.perf_map(pid, pc) {
                    self.stats.js_named += 1;
                    return Frame { function: name, ..Frame::unnamed_js() };
                }
                self.stats.js_unnamed += 1;
                Frame::unnamed_js()
            }
        }
    }

    /// A JS frame named from metadata, checked against the perf map where
    /// there is one.
    fn js_frame(&mut self, pid: u32, pc: u64, frame: Frame, js: &mut dyn JsNamer) -> Frame {
        self.stats.js_named += 1;
        if let Some(name) = js.perf_map(pid, pc) {
            self.stats.perf_map_checked += 1;
            if name != frame.function {
                self.stats.perf_map_differed += 1;
            }
        }
        debug_assert_eq!(frame.kind, FrameKind::Js);
        frame
    }

    /// One line on how stack capture and naming went, for `-v`.
    pub fn describe(&self, kernel: StackStats) -> String {
        let s = &self.stats;
        let perf = if s.perf_map_checked > 0 {
            format!(
                "; perf map: {} JS frames checked, {} named differently",
                s.perf_map_checked, s.perf_map_differed
            )
        } else {
            String::new()
        };
        format!(
            "stacks: {} captured in the kernel ({} distinct, {} cut at {} frames, {} past code without \
             frame pointers, {} of those not recovered, {} rejected here); {} named, {} lost before they were read; \
             JS frames: {} named, {} left as [JS]; {} frames in no file and no JS function{perf}",
            kernel.captured,
            kernel.inserted,
            kernel.truncated,
            heaptrace_common::MAX_STACK_FRAMES,
            kernel.scanned,
            kernel.scan_failed,
            s.scans_rejected,
            s.stacks,
            s.lost,
            s.js_named,
            s.js_unnamed,
            s.unknown,
        )
    }

    /// A process is gone (or exec'd): its stacks and caches go.
    pub fn forget(&mut self, pid: u32) {
        self.known.remove(&pid);
        self.native_cache.remove(&pid);
        self.native.forget(pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake;
    impl JsNamer for Fake {
        fn name(&mut self, _pid: u32, slot: u64) -> JsAnswer {
            match slot {
                0x1001 => Ok(Frame {
                    function: "handler".into(),
                    file: Some("/app.js".into()),
                    line: Some(3),
                    kind: FrameKind::Js,
                    build_id: None,
                }),
                _ => Err("not a JSFunction".into()),
            }
        }
        fn perf_map(&mut self, _pid: u32, pc: u64) -> Option<String> {
            (pc == 0x7000).then(|| "handler".into())
        }
    }

    #[test]
    fn jit_frames_are_named_by_their_function_or_left_as_js() {
        let mut namer = StackNamer::default();
        let mut js = Fake;
        let jit = NativeName::Anonymous { executable: true };
        let named = namer.frame(1, 0x7000, 0x1001, &jit, &mut js);
        assert_eq!(named.label(), "handler (app.js:3)");
        let unnamed = namer.frame(1, 0x8000, 0x2001, &jit, &mut js);
        assert_eq!(unnamed, Frame::unnamed_js());
        assert_eq!((namer.stats.js_named, namer.stats.js_unnamed), (1, 1));
        assert_eq!((namer.stats.perf_map_checked, namer.stats.perf_map_differed), (1, 0));
        // Builtins keep their names unless they run JS frames.
        let builtin = NativeName::Named {
            function: "Builtins_ArrayConstructor".into(),
            file: "/node".into(),
            builtin: true,
        };
        assert_eq!(namer.frame(1, 0x9000, 0x1001, &builtin, &mut js).function, "Builtins_ArrayConstructor");
        // A symbol-less address is a JS frame only with a script.
        let in_file = NativeName::InFile { file: "/libnode.so".into(), offset: 0x10, build_id: None };
        assert_eq!(namer.frame(1, 0x9000, 0x1001, &in_file, &mut js).function, "handler");
        assert_eq!(namer.frame(1, 0x9000, 0x5, &in_file, &mut js).function, "0x10");
    }
}
