//! Names native frames of a live process: which function of which file an
//! instruction address is in, with blazesym reading the files' symbol tables.
//!
//! Files are opened through `/proc/PID/map_files/<start>-<end>`, which
//! reaches the file a process mapped even inside a container, a chroot or a
//! private mount namespace, and after the file was deleted. blazesym caches a
//! parsed file by identity (device, inode, size, mtime), so the ~100 MB node
//! binary is parsed once for all processes that run it, not once per pid.
//!
//! Symbol tables only, no DWARF: node's binaries name their functions in
//! `.symtab`/`.dynsym` and carry little DWARF. Measured with blazesym's
//! DWARF reading on, the first call cost more (up to 31 ms instead of 29 ms
//! for node 26) and every later call about twice as much, and libc's syscall
//! wrappers lost their names where a `libc6-dbg` debug file was installed.
//!
//! The mappings are read once per call (one read of `/proc/PID/maps`), never
//! cached: V8 maps and unmaps code all the time, and a stale map would name
//! a new mapping after an old file.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
};

use blazesym::symbolize::{
    Input, Symbolized, Symbolizer,
    source::{Elf, Process, Source},
};
use procfs::process::{MMPermissions, MMapPath, MemoryMap};

use crate::core::sites::{Frame, FrameKind};

/// What one instruction address of a process is, once looked up.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NativeName {
    /// A function in a file.
    Named {
        /// Demangled, without parameters or return type:
        /// `v8::internal::Heap::CollectGarbage`, `Builtins_ArrayConstructor`,
        /// `malloc`.
        function: String,
        /// The file as the process sees it (its path in `/proc/PID/maps`,
        /// which may not exist on the host when the process is in a
        /// container), or `[vdso]`.
        file: String,
        /// One of V8's builtins (`Builtins_*`, embedded in node or libnode).
        builtin: bool,
    },
    /// In a file, but no symbol covers the address: a stripped binary, a
    /// gap between functions, a file that is not ELF, or a part of the file
    /// that is not mapped executable (then no code: a garbage frame).
    InFile {
        /// The file as the process sees it.
        file: String,
        /// The looked-up address's offset in the file, to name it later
        /// against an unstripped build with the same build-id.
        offset: u64,
        /// The file's GNU build-id in hex, if it has one and it was readable.
        build_id: Option<String>,
    },
    /// In memory that no file backs (`[heap]`, thread stacks and plain
    /// anonymous mappings). Executable anonymous memory is where V8 puts JIT
    /// code: a JS namer may name such a frame.
    Anonymous { executable: bool },
    /// In no mapping of the process (a garbage frame, or code unmapped
    /// since the stack was captured).
    Unmapped,
}

impl NativeName {
    /// The frame this name makes. Frames in anonymous or unmapped memory are
    /// `[unknown]` here; naming JS frames is the caller's job.
    pub fn to_frame(&self) -> Frame {
        match self {
            NativeName::Named { function, file, builtin } => Frame {
                function: function.clone(),
                file: Some(file.clone()),
                line: None,
                kind: if *builtin { FrameKind::Builtin } else { FrameKind::Native },
                build_id: None,
            },
            NativeName::InFile { file, offset, build_id } => Frame {
                function: format!("{offset:#x}"),
                file: Some(file.clone()),
                line: None,
                kind: FrameKind::Native,
                build_id: build_id.clone(),
            },
            NativeName::Anonymous { .. } | NativeName::Unmapped => Frame::unknown(),
        }
    }
}

/// Why a process's addresses could not be looked up at all.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// `/proc/PID/maps` could not be read: the process has exited (call
    /// [`NativeSymbolizer::forget`]) or heaptrace lacks the right to read it
    /// (run as root, or grant CAP_SYS_PTRACE and CAP_SYS_ADMIN).
    #[error("reading /proc/{pid}/maps: {source}")]
    Maps { pid: u32, source: procfs::ProcError },
}

/// Names addresses of live processes. Keep one for the life of the tracer:
/// the parsed files it holds are what makes later calls cheap. Measured on
/// node 18-26: the first call costs 2-30 ms (parsing node's symbol tables,
/// the upper end with the file out of the page cache); each later call costs
/// 0.1-0.3 ms (reading `/proc/PID/maps` of a busy node) plus 0.5-0.8 µs per
/// address, so name many stacks per call.
///
/// Not `Send`: blazesym's caches use `Rc`. Keep it on the thread that names
/// frames.
pub struct NativeSymbolizer {
    symbolizer: Symbolizer,
    /// The `map_files` paths opened for each pid, so that [`Self::forget`]
    /// can let go of them.
    opened: HashMap<u32, HashSet<PathBuf>>,
    /// Build-ids by file identity (device, inode); files seldom change.
    build_ids: HashMap<(i32, i32, u64), Option<String>>,
    /// Demangled names by raw symbol name (blazesym does not cache these).
    demangled: HashMap<Box<str>, String>,
}

/// Past this many demangled names the cache starts again rather than grow.
const DEMANGLED_CACHE_MAX: usize = 200_000;

impl Default for NativeSymbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl NativeSymbolizer {
    pub fn new() -> Self {
        let symbolizer = Symbolizer::builder()
            // Line numbers and inlined frames need DWARF; a flame graph of
            // allocation sites needs neither (see the module docs).
            .enable_code_info(false)
            .enable_inlined_fns(false)
            // Demangled here instead, without parameter lists (see demangle).
            .enable_demangling(false)
            .build();
        Self { symbolizer, opened: HashMap::new(), build_ids: HashMap::new(), demangled: HashMap::new() }
    }

    /// Names a captured stack, innermost first. Every pc but the innermost
    /// is a return address: the call is the instruction before it, and the
    /// pc itself may already be in the next function (after a call to a
    /// function that does not return), so `pc - 1` is looked up for those.
    pub fn symbolize_stack(&mut self, pid: u32, pcs: &[u64]) -> Result<Vec<NativeName>, NativeError> {
        self.symbolize(pid, &lookup_addresses(pcs))
    }

    /// Names exactly these addresses of process `pid`, in order. Fails only
    /// when the process's mappings cannot be read; an address that cannot be
    /// named gets the variant that says why.
    pub fn symbolize(&mut self, pid: u32, addrs: &[u64]) -> Result<Vec<NativeName>, NativeError> {
        let maps = procfs::process::Process::new(pid as i32)
            .and_then(|p| p.maps())
            .map_err(|source| NativeError::Maps { pid, source })?;
        let mut maps: Vec<MemoryMap> = maps.into_iter().collect();
        maps.sort_by_key(|m| m.address.0);

        let mut out = vec![NativeName::Unmapped; addrs.len()];
        // Addresses in file mappings, by mapping: looked up in one blazesym
        // call per mapping.
        let mut in_files: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut in_vdso = Vec::new();
        for (i, &addr) in addrs.iter().enumerate() {
            let Some(m) = mapping_of(&maps, addr) else { continue };
            let executable = maps[m].perms.contains(MMPermissions::EXECUTE);
            match &maps[m].pathname {
                MMapPath::Path(_) => in_files.entry(m).or_default().push(i),
                MMapPath::Vdso => in_vdso.push(i),
                _ => out[i] = NativeName::Anonymous { executable },
            }
        }

        for (m, indices) in in_files {
            self.name_in_file(pid, &maps[m], addrs, &indices, &mut out);
        }
        if !in_vdso.is_empty() {
            self.name_in_vdso(pid, addrs, &in_vdso, &mut out);
        }
        Ok(out)
    }

    /// Lets go of what was opened for `pid`: call it when the process has
    /// exited or exec'd. Parsed files that other processes still map stay.
    pub fn forget(&mut self, pid: u32) {
        let Some(blaze_pid) = blaze_pid(pid) else { return };
        // Eviction only drops cache entries; errors leave them in place,
        // which costs memory, not correctness.
        let _ = self.symbolizer.evict(&blazesym::symbolize::evict::Process::new(blaze_pid).into());
        for path in self.opened.remove(&pid).unwrap_or_default() {
            let _ = self.symbolizer.evict(&blazesym::symbolize::evict::Elf::new(path).into());
        }
    }

    /// Names `addrs[indices]`, all in the file mapping `map`.
    fn name_in_file(
        &mut self,
        pid: u32,
        map: &MemoryMap,
        addrs: &[u64],
        indices: &[usize],
        out: &mut [NativeName],
    ) {
        let MMapPath::Path(path) = &map.pathname else { return };
        let file = seen_path(path);
        let (start, end) = map.address;
        let via = PathBuf::from(format!("/proc/{pid}/map_files/{start:x}-{end:x}"));
        self.opened.entry(pid).or_default().insert(via.clone());
        let offsets: Vec<u64> = indices.iter().map(|&i| addrs[i] - start + map.offset).collect();

        let mut elf = Elf::new(&via);
        elf.debug_syms = false;
        // Code is only in executable mappings: an address elsewhere in a file
        // (a garbage frame) would be named after whatever data is there.
        // Not ELF, unreadable, gone: every address stays a bare offset.
        let named = if map.perms.contains(MMPermissions::EXECUTE) {
            self.symbolizer.symbolize(&Source::Elf(elf), Input::FileOffset(&offsets)).ok()
        } else {
            None
        };
        let mut missing = Vec::new();
        for (k, (&i, &offset)) in indices.iter().zip(&offsets).enumerate() {
            match named.as_ref().and_then(|n| n.get(k)) {
                Some(Symbolized::Sym(sym)) => {
                    let function = demangle_cached(&mut self.demangled, &sym.name);
                    let builtin = function.starts_with("Builtins_");
                    out[i] = NativeName::Named { function, file: file.clone(), builtin };
                }
                _ => missing.push((i, offset)),
            }
        }
        if missing.is_empty() {
            return;
        }
        let key = (map.dev.0, map.dev.1, map.inode);
        let build_id = self.build_ids.entry(key).or_insert_with(|| read_build_id(&via)).clone();
        for (i, offset) in missing {
            out[i] = NativeName::InFile { file: file.clone(), offset, build_id: build_id.clone() };
        }
    }

    /// The vDSO is no file: blazesym's process source reads it from memory.
    /// What it cannot name stays anonymous executable memory.
    fn name_in_vdso(&mut self, pid: u32, addrs: &[u64], indices: &[usize], out: &mut [NativeName]) {
        for &i in indices {
            out[i] = NativeName::Anonymous { executable: true };
        }
        let Some(blaze_pid) = blaze_pid(pid) else { return };
        let mut process = Process::new(blaze_pid);
        process.debug_syms = false;
        process.perf_map = false;
        let vdso_addrs: Vec<u64> = indices.iter().map(|&i| addrs[i]).collect();
        let Ok(named) = self.symbolizer.symbolize(&Source::Process(process), Input::AbsAddr(&vdso_addrs))
        else {
            return;
        };
        for (&i, sym) in indices.iter().zip(&named) {
            out[i] = match sym {
                Symbolized::Sym(sym) => NativeName::Named {
                    function: demangle_cached(&mut self.demangled, &sym.name),
                    file: "[vdso]".into(),
                    builtin: false,
                },
                Symbolized::Unknown(_) => NativeName::Anonymous { executable: true },
            };
        }
    }
}

/// The addresses to look up for a stack's pcs (see
/// [`NativeSymbolizer::symbolize_stack`]).
pub fn lookup_addresses(pcs: &[u64]) -> Vec<u64> {
    pcs.iter().enumerate().map(|(i, &pc)| if i == 0 { pc } else { pc.saturating_sub(1) }).collect()
}

/// The mapping that holds `addr`, in maps sorted by start.
fn mapping_of(maps: &[MemoryMap], addr: u64) -> Option<usize> {
    let after = maps.partition_point(|m| m.address.0 <= addr);
    let m = after.checked_sub(1)?;
    (addr < maps[m].address.1).then_some(m)
}

/// The path as `/proc/PID/maps` shows it, less the kernel's ` (deleted)`
/// mark (the file itself is still reachable through map_files).
fn seen_path(path: &std::path::Path) -> String {
    let s = path.to_string_lossy();
    s.strip_suffix(" (deleted)").unwrap_or(&s).to_owned()
}

fn blaze_pid(pid: u32) -> Option<blazesym::Pid> {
    // 0 would mean "this process" to blazesym, never what a caller means.
    (pid != 0).then(|| blazesym::Pid::from(pid))
}

fn read_build_id(path: &std::path::Path) -> Option<String> {
    let id = blazesym::helper::read_elf_build_id(path).ok()??;
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
}

fn demangle_cached(cache: &mut HashMap<Box<str>, String>, raw: &str) -> String {
    if let Some(name) = cache.get(raw) {
        return name.clone();
    }
    if cache.len() >= DEMANGLED_CACHE_MAX {
        cache.clear();
    }
    let name = demangle(raw);
    cache.insert(raw.into(), name.clone());
    name
}

/// Rust or C++ (Itanium) names, demangled the way profilers show frames:
/// `v8::internal::Heap::CollectGarbage`, not the full signature (V8's
/// template-heavy signatures run to hundreds of characters). Anything else
/// (C names, `Builtins_*`) is kept as it is.
pub fn demangle(raw: &str) -> String {
    if let Ok(name) = rustc_demangle::try_demangle(raw) {
        // `{:#}` leaves out the hash suffix.
        return format!("{name:#}");
    }
    if raw.starts_with("_Z") {
        let options = cpp_demangle::DemangleOptions::new().no_params().no_return_type();
        if let Some(name) =
            cpp_demangle::Symbol::new(raw).ok().and_then(|s| s.demangle_with_options(&options).ok())
        {
            return name;
        }
    }
    raw.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_addresses_are_looked_up_one_byte_back() {
        assert_eq!(lookup_addresses(&[0x1000, 0x2000, 0]), vec![0x1000, 0x1fff, 0]);
        assert!(lookup_addresses(&[]).is_empty());
    }

    #[test]
    fn cpp_names_lose_their_parameters() {
        // v8::internal::Heap::CollectGarbage(AllocationSpace, GarbageCollectionReason, GCCallbackFlags)
        let raw = "_ZN2v88internal4Heap14CollectGarbageENS0_15AllocationSpaceENS0_23GarbageCollectionReasonENS_15GCCallbackFlagsE";
        assert_eq!(demangle(raw), "v8::internal::Heap::CollectGarbage");
        assert_eq!(demangle("Builtins_ArrayConstructor"), "Builtins_ArrayConstructor");
        assert_eq!(demangle("malloc"), "malloc");
        // Not a valid mangling: kept, no panic.
        assert_eq!(demangle("_ZN2v8"), "_ZN2v8");
        assert_eq!(demangle("_Z"), "_Z");
    }

    #[test]
    fn rust_names_lose_their_hash() {
        assert_eq!(demangle("_ZN4core3fmt5write17h0123456789abcdefE"), "core::fmt::write");
    }

    #[test]
    fn frames_from_names() {
        let named = NativeName::Named {
            function: "Builtins_ArrayConstructor".into(),
            file: "/n".into(),
            builtin: true,
        };
        assert_eq!(named.to_frame().kind, FrameKind::Builtin);
        let native = NativeName::Named { function: "malloc".into(), file: "/libc".into(), builtin: false };
        let frame = native.to_frame();
        assert_eq!((frame.kind, frame.file.as_deref()), (FrameKind::Native, Some("/libc")));
        let stripped =
            NativeName::InFile { file: "/node".into(), offset: 0x1a2b, build_id: Some("abcd".into()) };
        let frame = stripped.to_frame();
        assert_eq!(frame.function, "0x1a2b");
        assert_eq!(frame.build_id.as_deref(), Some("abcd"));
        assert!(!frame.is_named());
        assert_eq!(NativeName::Anonymous { executable: true }.to_frame(), Frame::unknown());
        assert_eq!(NativeName::Unmapped.to_frame(), Frame::unknown());
    }

    #[test]
    fn addresses_find_their_mapping() {
        let map = |start: u64, end: u64| MemoryMap {
            address: (start, end),
            perms: MMPermissions::READ,
            offset: 0,
            dev: (0, 0),
            inode: 0,
            pathname: MMapPath::Anonymous,
            extension: Default::default(),
        };
        let maps = vec![map(0x1000, 0x2000), map(0x3000, 0x4000)];
        assert_eq!(mapping_of(&maps, 0xfff), None);
        assert_eq!(mapping_of(&maps, 0x1000), Some(0));
        assert_eq!(mapping_of(&maps, 0x1fff), Some(0));
        assert_eq!(mapping_of(&maps, 0x2000), None);
        assert_eq!(mapping_of(&maps, 0x3fff), Some(1));
        assert_eq!(mapping_of(&maps, u64::MAX), None);
        assert_eq!(mapping_of(&[], 0x1000), None);
    }

    #[test]
    fn own_functions_are_named() {
        // This test binary: a function of its own, and libc's malloc.
        let mut s = NativeSymbolizer::new();
        let pid = std::process::id();
        let here = lookup_addresses as *const () as u64;
        let names = s.symbolize(pid, &[here, 0]).unwrap();
        match &names[0] {
            NativeName::Named { function, builtin: false, .. } => {
                assert!(function.ends_with("lookup_addresses"), "{function}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(names[1], NativeName::Unmapped);

        // A local on this thread's stack; the first read-only mapping of
        // this binary (no code there: a bare offset, with the build-id).
        let local = 7u64;
        let on_stack = std::ptr::addr_of!(local) as u64;
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let maps = procfs::process::Process::myself().unwrap().maps().unwrap();
        let rodata = maps
            .iter()
            .find(|m| {
                m.pathname == MMapPath::Path(exe.clone())
                    && m.perms == MMPermissions::READ | MMPermissions::PRIVATE
            })
            .expect("a read-only mapping of the test binary");
        let names = s.symbolize(pid, &[on_stack, rodata.address.0]).unwrap();
        assert_eq!(names[0], NativeName::Anonymous { executable: false });
        match &names[1] {
            NativeName::InFile { file, offset, build_id: Some(_) } => {
                assert_eq!((file.as_str(), *offset), (exe.to_str().unwrap(), rodata.offset))
            }
            other => panic!("{other:?}"),
        }
        s.forget(pid);
        s.forget(0);
    }

    #[test]
    fn a_missing_process_is_an_error() {
        let mut s = NativeSymbolizer::new();
        // Above the kernel's pid_max limit (4M): no such process.
        assert!(matches!(s.symbolize(1 << 23, &[0x1000]), Err(NativeError::Maps { .. })));
    }
}
