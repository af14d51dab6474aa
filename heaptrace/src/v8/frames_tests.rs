//! The namer against a fake heap laid out as Node 18 (V8 10.2) and Node 24
//! (V8 13.6) lay theirs out: names, inferred names, positions in both
//! ScopeInfo layouts, local names in a hash table, every string
//! representation, V8's line ends or the source's, the cache, and every
//! reason a slot is not named.

use std::{cell::RefCell, collections::HashMap, rc::Rc, sync::Arc};

use super::*;
use crate::v8::postmortem::tests::{node_18, node_24};

const BASE: u64 = 0x1_0000;
/// An instance type that is neither a string, a map, nor a JSFunction
/// (V8's undefined is an Oddball).
const ODDBALL: u16 = 131;

/// Memory: one contiguous heap (shared with the test, which may change
/// it), and buffers outside it.
struct Fake {
    regions: Vec<(u64, Rc<RefCell<Vec<u8>>>)>,
}

impl Memory for Fake {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), String> {
        for (start, bytes) in &self.regions {
            let bytes = bytes.borrow();
            let (Some(from), end) = (addr.checked_sub(*start), addr + buf.len() as u64) else { continue };
            if end <= start + bytes.len() as u64 {
                buf.copy_from_slice(&bytes[from as usize..from as usize + buf.len()]);
                return Ok(());
            }
        }
        Err(format!("nothing at {addr:#x}"))
    }
}

fn smi(v: i64) -> u64 {
    (v as u64) << 32
}

/// ScopeInfo flags: function variable (UNUSED = 3), inferred name, saved
/// class variable; as a Smi (V8 < 13) or a padded uint32.
fn flags(function_variable: bool, inferred: bool, raw: bool) -> u64 {
    let f = 2 | (1 << 6) | if function_variable { 3 << 12 } else { 0 } | if inferred { 1 << 14 } else { 0 };
    if raw { f } else { smi(f as i64) }
}

struct Heap {
    pm: Postmortem,
    heap: Rc<RefCell<Vec<u8>>>,
    outside: Vec<(u64, Rc<RefCell<Vec<u8>>>)>,
    maps: HashMap<u16, u64>,
    undefined: u64,
}

impl Heap {
    fn new(pm: Postmortem) -> Self {
        let mut h = Heap { pm, heap: Rc::default(), outside: Vec::new(), maps: HashMap::new(), undefined: 0 };
        // The meta map: a map whose map is itself.
        let meta = h.alloc(80);
        h.set(meta, 0, meta + 1);
        h.set16(meta, 12, h.pm.types.map);
        h.maps.insert(h.pm.types.map, meta + 1);
        h.undefined = h.object(ODDBALL, 16, &[]);
        h
    }

    fn alloc(&mut self, size: usize) -> u64 {
        let mut heap = self.heap.borrow_mut();
        let addr = BASE + heap.len() as u64;
        let len = heap.len() + size.div_ceil(8) * 8;
        heap.resize(len, 0);
        addr
    }

    fn bytes(&mut self, addr: u64, bytes: &[u8]) {
        let at = (addr - BASE) as usize;
        self.heap.borrow_mut()[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn set(&mut self, addr: u64, offset: u64, word: u64) {
        self.bytes(addr + offset, &word.to_le_bytes());
    }

    fn set16(&mut self, addr: u64, offset: u64, v: u16) {
        self.bytes(addr + offset, &v.to_le_bytes());
    }

    fn word(&self, addr: u64) -> u64 {
        let at = (addr - BASE) as usize;
        u64::from_le_bytes(self.heap.borrow()[at..at + 8].try_into().unwrap())
    }

    fn map(&mut self, ty: u16) -> u64 {
        if let Some(&m) = self.maps.get(&ty) {
            return m;
        }
        let meta = self.maps[&self.pm.types.map];
        let m = self.alloc(80);
        self.set(m, 0, meta);
        self.set16(m, 12, ty);
        self.maps.insert(ty, m + 1);
        m + 1
    }

    /// An object of type `ty` with these words; returns its tagged pointer.
    fn object(&mut self, ty: u16, size: usize, words: &[(u64, u64)]) -> u64 {
        let map = self.map(ty);
        let addr = self.alloc(size);
        self.set(addr, 0, map);
        for &(offset, word) in words {
            self.set(addr, offset, word);
        }
        addr + 1
    }

    fn string_object(&mut self, ty: u16, len: usize, size: usize) -> u64 {
        let s = self.object(ty, size, &[]);
        self.bytes(s - 1 + self.pm.offsets.string_length, &(len as i32).to_le_bytes());
        s
    }

    /// A sequential string: one byte per character if Latin-1, else two.
    fn string(&mut self, text: &str) -> u64 {
        let units: Vec<u16> = text.encode_utf16().collect();
        let one_byte = units.iter().all(|&u| u < 256);
        let (ty, width) = if one_byte { (8, 1) } else { (32, 2) };
        let s = self.string_object(ty, units.len(), 16 + units.len() * width);
        let chars: Vec<u8> = if one_byte {
            units.iter().map(|&u| u as u8).collect()
        } else {
            units.iter().flat_map(|u| u.to_le_bytes()).collect()
        };
        self.bytes(s - 1 + 16, &chars);
        s
    }

    fn cons(&mut self, first: u64, second: u64, len: usize) -> u64 {
        let s = self.string_object(41, len, 32);
        self.set(s - 1, 16, first);
        self.set(s - 1, 24, second);
        s
    }

    fn sliced(&mut self, parent: u64, offset: i64, len: usize) -> u64 {
        let s = self.string_object(43, len, 32);
        self.set(s - 1, 16, parent);
        self.set(s - 1, 24, smi(offset));
        s
    }

    fn thin(&mut self, actual: u64, len: usize) -> u64 {
        let s = self.string_object(45, len, 24);
        self.set(s - 1, 16, actual);
        s
    }

    /// An external one-byte string, its characters outside the heap.
    fn external(&mut self, text: &str, uncached: bool) -> u64 {
        let data = 0x7000_0000 + 0x1000 * self.outside.len() as u64;
        self.outside.push((data, Rc::new(RefCell::new(text.as_bytes().to_vec()))));
        let s = self.string_object(if uncached { 58 } else { 42 }, text.len(), 32);
        self.set(s - 1, 24, data);
        s
    }

    fn fixed_array(&mut self, items: &[u64]) -> u64 {
        let ty = self.pm.types.fixed_array;
        let a = self.object(ty, 16 + 8 * items.len(), &[(8, smi(items.len() as i64))]);
        for (i, &w) in items.iter().enumerate() {
            self.set(a - 1, 16 + 8 * i as u64, w);
        }
        a
    }

    fn scope_info(&mut self, slots: &[u64]) -> u64 {
        let ty = self.pm.types.scope_info;
        let s = self.object(ty, 8 + 8 * slots.len(), &[]);
        for (i, &w) in slots.iter().enumerate() {
            self.set(s - 1, 8 + 8 * i as u64, w);
        }
        s
    }

    fn script(&mut self, name: u64, source: u64, line_ends: Option<u64>) -> u64 {
        let (o, ty, undefined) = (self.pm.offsets, self.pm.types.script, self.undefined);
        let ends = line_ends.unwrap_or(undefined);
        self.object(ty, 96, &[(o.script_name, name), (o.script_source, source), (o.script_line_ends, ends)])
    }

    fn function(&mut self, name_or_scope_info: u64, script: u64) -> u64 {
        self.function_of_type(self.pm.types.js_function.start().to_owned(), name_or_scope_info, script)
    }

    fn function_of_type(&mut self, ty: u16, name_or_scope_info: u64, script: u64) -> u64 {
        let (o, sfi_ty) = (self.pm.offsets, self.pm.types.shared_function_info);
        let sfi = self.object(
            sfi_ty,
            64,
            &[(o.sfi_name_or_scope_info, name_or_scope_info), (o.sfi_script, script)],
        );
        self.object(ty, 64, &[(o.js_function_shared, sfi)])
    }

    fn namer(&self) -> JsFrameNamer<Fake> {
        let mut regions = vec![(BASE, self.heap.clone())];
        regions.extend(self.outside.iter().cloned());
        JsFrameNamer::with_memory(Fake { regions }, Arc::new(self.pm.clone()))
    }
}

fn js(function: &str, file: Option<&str>, line: Option<u32>) -> Frame {
    Frame { function: function.into(), file: file.map(Into::into), line, kind: FrameKind::Js, build_id: None }
}

const SOURCE: &str = "// app\n\nfunction handler(a) {\n  return a;\n}\n";

#[test]
fn node_24_named_function_with_its_positions_in_fixed_slots() {
    for raw_flags in [false, true] {
        let mut h = Heap::new(node_24());
        let (name, local, source, file) =
            (h.string("handler"), h.string("a"), h.string(SOURCE), h.string("/srv/app.js"));
        let start = SOURCE.find('(').unwrap() as i64;
        let scope = h.scope_info(&[
            flags(true, false, raw_flags),
            smi(1),
            smi(1),
            smi(start),
            smi(start + 20),
            local,
            smi(0x11),
            name,
            smi(0),
        ]);
        let script = h.script(file, source, None);
        let f = h.function(scope, script);
        let mut namer = h.namer();
        assert_eq!(namer.name(f), Ok(js("handler", Some("/srv/app.js"), Some(3))));
    }
}

#[test]
fn node_18_inferred_name_and_positions_after_the_names() {
    let mut h = Heap::new(node_18());
    let (x, y, inferred) = (h.string("x"), h.string("y"), h.string("obj.mét€"));
    let (srv, app) = (h.string("/srv/"), h.string("app.js"));
    let file = h.cons(srv, app, 11);
    let ends = [9, 19, 29, 39, 49].map(smi);
    let line_ends = h.fixed_array(&ends);
    let source = h.string("unused: V8's line ends are taken");
    let scope = h.scope_info(&[
        flags(false, true, false),
        smi(0),
        smi(2),
        x,
        y,
        smi(1),
        smi(2),
        inferred,
        smi(30),
        smi(44),
    ]);
    let script = h.script(file, source, Some(line_ends));
    let f = h.function(scope, script);
    assert_eq!(h.namer().name(f), Ok(js("obj.mét€", Some("/srv/app.js"), Some(4))));
    // A function variable with no name (Smi zero) falls to the inferred one.
    let scope =
        h.scope_info(&[flags(true, true, false), smi(0), smi(0), smi(0), smi(3), inferred, smi(30), smi(44)]);
    let f = h.function(scope, script);
    assert_eq!(h.namer().name(f).unwrap().function, "obj.mét€");
}

#[test]
fn functions_without_a_name_or_a_script() {
    let mut h = Heap::new(node_24());
    let (source, file, empty) = (h.string(SOURCE), h.string("node:internal/x"), h.string(""));
    let script = h.script(file, source, None);
    // No name and no inferred one, or an empty one.
    let scope = h.scope_info(&[flags(false, false, false), smi(0), smi(0), smi(0), smi(5)]);
    let anonymous = h.function(scope, script);
    let scope = h.scope_info(&[flags(false, true, false), smi(0), smi(0), smi(7), smi(9), empty]);
    let empty_inferred = h.function(scope, script);
    // kNoSharedNameSentinel: no name, and no position to give a line.
    let sentinel = h.function(smi(0), script);
    // A builtin: a string name, no script.
    let (push, undefined) = (h.string("push"), h.undefined);
    let builtin = h.function(push, undefined);
    // A class constructor: the last type of the JSFunction range.
    let last = *h.pm.types.js_function.end();
    let constructor = h.function_of_type(last, scope, script);
    let mut namer = h.namer();
    assert_eq!(namer.name(anonymous), Ok(js(ANONYMOUS, Some("node:internal/x"), Some(1))));
    assert_eq!(namer.name(empty_inferred), Ok(js(ANONYMOUS, Some("node:internal/x"), Some(2))));
    assert_eq!(namer.name(sentinel), Ok(js(ANONYMOUS, Some("node:internal/x"), None)));
    assert_eq!(namer.name(builtin), Ok(js("push", None, None)));
    assert_eq!(namer.name(constructor).unwrap().line, Some(2));
}

#[test]
fn many_context_locals_keep_their_names_in_a_hash_table() {
    let mut h = Heap::new(node_18());
    let (name, source, file) = (h.string("big"), h.string(SOURCE), h.string("/a.js"));
    let table = h.fixed_array(&[smi(0); 4]);
    let script = h.script(file, source, None);
    let mut slots = vec![flags(true, false, false), smi(0), smi(80), table];
    slots.extend((0..80).map(smi));
    slots.extend([name, smi(2), smi(25), smi(40)]);
    let scope = h.scope_info(&slots);
    let f = h.function(scope, script);
    // And a version that keeps them inline: strings where the table was.
    let local = h.string("v");
    let mut slots = vec![flags(true, false, false), smi(0), smi(80)];
    slots.extend([local; 80]);
    slots.extend((0..80).map(smi));
    slots.extend([name, smi(2), smi(25), smi(40)]);
    let scope = h.scope_info(&slots);
    let inline = h.function(scope, script);
    let mut namer = h.namer();
    assert_eq!(namer.name(f), Ok(js("big", Some("/a.js"), Some(3))));
    assert_eq!(namer.name(inline), Ok(js("big", Some("/a.js"), Some(3))));
}

#[test]
fn sources_of_every_representation_count_lines() {
    let mut h = Heap::new(node_24());
    let (name, file) = (h.string("f"), h.string("/a.js"));
    let scope = h.scope_info(&[flags(true, false, false), smi(0), smi(0), smi(20), smi(30), name, smi(0)]);
    let text = "0\n2\n4\n6\n8\n0\n2\n4\n6\n8\n0\n2\n";
    let flat = h.string(&format!("xx{text}"));
    let sliced = h.sliced(flat, 2, text.len());
    let thin = h.thin(sliced, text.len());
    let external = h.external(text, false);
    let uncached = h.external(text, true);
    let mut namer_of = |source| {
        let script = h.script(file, source, None);
        let f = h.function(scope, script);
        h.namer().name(f).unwrap()
    };
    assert_eq!(namer_of(thin).line, Some(11));
    assert_eq!(namer_of(external).line, Some(11));
    // Its characters cannot be reached: the function is named, lineless.
    assert_eq!(namer_of(uncached), js("f", Some("/a.js"), None));
}

#[test]
fn a_cache_hit_is_checked_against_the_function() {
    let mut h = Heap::new(node_24());
    let (name, other, source, file) =
        (h.string("first"), h.string("second"), h.string(SOURCE), h.string("/a.js"));
    let scope = h.scope_info(&[flags(true, false, false), smi(0), smi(0), smi(20), smi(30), name, smi(0)]);
    let moved = h.scope_info(&[flags(true, false, false), smi(0), smi(0), smi(20), smi(30), other, smi(0)]);
    let script = h.script(file, source, None);
    let f = h.function(scope, script);
    let mut namer = h.namer();
    assert_eq!(namer.name(f).unwrap().function, "first");
    let cold = namer.stats();
    assert_eq!(namer.name(f).unwrap().function, "first");
    let hit = namer.stats();
    assert_eq!((hit.hits, hit.misses), (1, 1));
    assert_eq!(hit.reads - cold.reads, 2, "a hit reads the function and the SharedFunctionInfo");
    // Another SharedFunctionInfo at the same address (a GC moved things).
    let sfi = h.word(f - 1 + h.pm.offsets.js_function_shared);
    h.set(sfi - 1, h.pm.offsets.sfi_name_or_scope_info, moved);
    assert_eq!(namer.name(f).unwrap().function, "second");
    assert_eq!(namer.stats().misses, 2);
}

#[test]
fn every_reason_not_to_name_a_slot() {
    let mut h = Heap::new(node_24());
    let (name, source, file) = (h.string("f"), h.string(SOURCE), h.string("/a.js"));
    let script = h.script(file, source, None);
    let shared_is_a_string =
        h.object(*h.pm.types.js_function.start(), 64, &[(h.pm.offsets.js_function_shared, name)]);
    // Context local infos that are not Smis.
    let bad_scope =
        h.scope_info(&[flags(true, false, false), smi(0), smi(1), smi(0), smi(3), name, name, name, smi(0)]);
    let bad_scope = h.function(bad_scope, script);
    // A "map" whose own map is no meta map.
    let fake_map = h.object(ODDBALL, 80, &[]);
    let not_a_map = h.alloc(64);
    h.set(not_a_map, 0, fake_map);
    let mut namer = h.namer();
    assert_eq!(namer.name(0), Err(Unnamed::NotHeapObject));
    assert_eq!(namer.name(smi(7)), Err(Unnamed::NotHeapObject));
    assert_eq!(namer.name(0x7fff_0000_0001), Err(Unnamed::Unreadable));
    assert_eq!(namer.name(name), Err(Unnamed::NotJsFunction));
    assert_eq!(namer.name(shared_is_a_string), Err(Unnamed::Unexpected("SharedFunctionInfo")));
    assert_eq!(namer.name(bad_scope), Err(Unnamed::Unexpected("ScopeInfo local infos")));
    assert_eq!(namer.name(not_a_map + 1), Err(Unnamed::Unexpected("map")));
    assert_eq!(Unnamed::Unexpected("map").key(), "unexpected");
}

#[test]
fn builtins_that_run_in_an_interpreted_frame() {
    for name in [
        "Builtins_InterpreterEntryTrampoline",
        "Builtins_InterpreterEnterAtBytecode",
        "Builtins_InterpreterEnterAtNextBytecode",
        "Builtins_InterpreterEntryTrampolineForProfiling",
        "Builtins_BaselineOrInterpreterEnterAtBytecode",
        "Builtins_LdaSmiHandler",
        "Builtins_CallProperty1WideHandler",
        "Builtins_JumpLoopExtraWideHandler",
    ] {
        assert!(is_interpreter_frame_builtin(name), "{name}");
    }
    for name in [
        "Builtins_InterpreterPushArgsThenCall",
        "Builtins_AtomicsMutexAsyncUnlockResolveHandler",
        "Builtins_Handler",
        "Builtins_ArrayPrototypePush",
        "LdaSmiHandler",
        "v8::internal::Heap::CollectGarbage",
    ] {
        assert!(!is_interpreter_frame_builtin(name), "{name}");
    }
}
