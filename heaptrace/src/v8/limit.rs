//! V8's heap limit, read from the process: what
//! `v8.getHeapStatistics().heap_size_limit` reports inside it, whatever set
//! it (`--max-old-space-size` on the command line or in `NODE_OPTIONS`, or
//! V8's default from the memory it sees, a cgroup's limit included).
//!
//! `heap_size_limit` is `Heap::MaxReserved()`, a small leaf function that
//! every Node build carries as a symbol. Rather than recompute V8's sizing
//! rules (which change from version to version), heaptrace runs that
//! function's own code ([`super::emulate`]) with `this` = the process's
//! `Heap*`, reading the process's memory with `process_vm_readv`: the
//! process is never stopped nor written to. See docs/architecture.md, "V8's
//! heap limit, read from the process".

use std::os::unix::fs::MetadataExt;

use thiserror::Error;

use super::{
    ProcessBinary,
    emulate::{self, EmulateError, Memory},
    memory::ProcessMemory,
};

/// `v8::internal::Heap::MaxReserved() const`; not const on V8 10.2 (Node 18).
pub const MANGLED: [&str; 2] =
    ["_ZNK2v88internal4Heap11MaxReservedEv", "_ZN2v88internal4Heap11MaxReservedEv"];

/// The code read at most from the file, when the symbol has no size or
/// an unlikely one: the function is a dozen instructions.
const MAX_CODE: usize = 256;

/// `Heap::MaxReserved()` in one binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaxReservedFn {
    /// Its address in the ELF file's own terms (the link-time address).
    pub vaddr: u64,
    pub file_offset: u64,
    /// Its machine code, from the file: the process's copy could hold a
    /// debugger's breakpoint.
    pub code: Vec<u8>,
}

impl MaxReservedFn {
    /// Finds it among the symbols of an ELF image (`data`), given the symbol
    /// `name`, its address and size, and where that address is in the file.
    pub fn from_symbol(data: &[u8], name: &str, vaddr: u64, size: u64, file_offset: u64) -> Option<Self> {
        if !MANGLED.contains(&name) {
            return None;
        }
        let start = usize::try_from(file_offset).ok()?;
        let len = usize::try_from(size).ok().filter(|&n| n > 0 && n <= MAX_CODE).unwrap_or(MAX_CODE);
        let code = data.get(start..)?;
        let code = code[..len.min(code.len())].to_vec();
        (!code.is_empty()).then_some(Self { vaddr, file_offset, code })
    }
}

#[derive(Debug, Error)]
pub enum LimitError {
    #[error("no V8 in process {0}")]
    NotV8(u32),
    #[error("cannot find V8 in process {pid}: {source}")]
    Load {
        pid: u32,
        #[source]
        source: super::LoadError,
    },
    #[error("{0} has no symbol for Heap::MaxReserved")]
    NoFunction(String),
    #[error("{file} is not mapped where process {pid} could run Heap::MaxReserved")]
    NotMapped { pid: u32, file: String },
    #[error("cannot read process {pid}'s mappings: {reason}")]
    Maps { pid: u32, reason: String },
    #[error("running Heap::MaxReserved of process {pid}: {source}")]
    Emulate {
        pid: u32,
        #[source]
        source: EmulateError,
    },
}

/// Reads one process's heap limit: where `Heap::MaxReserved()` is in it,
/// found once.
#[derive(Clone, Debug)]
pub struct LimitReader {
    pid: u32,
    /// The function's address in the process.
    address: u64,
    code: Vec<u8>,
}

impl LimitReader {
    /// Finds `Heap::MaxReserved()` in the process: official builds are not
    /// position-independent (the address is the file's); a shared library
    /// such as Debian's libnode.so is wherever the process mapped it.
    pub fn new(pid: u32, binary: &ProcessBinary) -> Result<Self, LimitError> {
        let f = binary
            .binary
            .max_reserved
            .as_ref()
            .ok_or_else(|| LimitError::NoFunction(binary.display_path.clone()))?;
        let address = if binary.binary.relocatable { runtime_address(pid, binary, f)? } else { f.vaddr };
        Ok(Self { pid, address, code: f.code.clone() })
    }

    /// The function's address in the process.
    pub fn address(&self) -> u64 {
        self.address
    }

    /// V8's `heap_size_limit` for the isolate whose `Heap` is at `heap` (a
    /// `Heap*`, e.g. the `this` of `Heap::CollectGarbage`).
    pub fn read(&self, heap: u64) -> Result<HeapLimits, LimitError> {
        let mut memory = ProcessMemory::new(self.pid);
        limits(&self.code, self.address, heap, &mut memory)
            .map_err(|source| LimitError::Emulate { pid: self.pid, source })
    }
}

/// V8's limits for one isolate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapLimits {
    /// `heap_size_limit`: the old generation's limit plus the young
    /// generation's reserve.
    pub heap_size_limit: u64,
    /// The old generation's limit alone (`max_old_generation_size_`, what
    /// `--max-old-space-size` sets): where the JS heap's floor runs out and
    /// V8 aborts. None if it could not be told apart.
    pub old_generation: Option<u64>,
}

/// How far one word is moved to see how the result follows it.
const NUDGE: u64 = 1 << 20;

/// Memory that notes every 8-byte word read, and can move one of them.
struct Nudged<'a> {
    inner: &'a mut dyn Memory,
    words: Vec<(u64, u64)>,
    nudge: Option<u64>,
}

impl Memory for Nudged<'_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), String> {
        self.inner.read(addr, buf)?;
        if let Ok(word) = <[u8; 8]>::try_from(&*buf) {
            let mut v = u64::from_le_bytes(word);
            self.words.push((addr, v));
            if self.nudge == Some(addr) {
                v = v.wrapping_add(NUDGE);
                buf.copy_from_slice(&v.to_le_bytes());
            }
        }
        Ok(())
    }
}

/// Runs `MaxReserved` for `heap`; then tells the old generation's limit
/// apart from the young generation's reserve without knowing the version's
/// formula: it is the one word the result follows one for one (the
/// young-generation terms are multiplied, 2 or 3 semi-spaces; a pointer on
/// the way is no size at all). Each word read is moved by a MiB in turn
/// and the function run again.
pub fn limits(
    code: &[u8],
    address: u64,
    heap: u64,
    memory: &mut dyn Memory,
) -> Result<HeapLimits, EmulateError> {
    let mut m = Nudged { inner: memory, words: Vec::new(), nudge: None };
    let total = emulate::call(code, address, &[heap], &mut m, emulate::BUDGET)?;
    let mut words = std::mem::take(&mut m.words);
    words.dedup();
    let mut one_for_one = Vec::new();
    for &(addr, value) in &words {
        m.nudge = Some(addr);
        if emulate::call(code, address, &[heap], &mut m, emulate::BUDGET) == Ok(total.wrapping_add(NUDGE)) {
            one_for_one.push(value);
        }
    }
    let old_generation = match one_for_one[..] {
        [old] if old <= total => Some(old),
        _ => None,
    };
    Ok(HeapLimits { heap_size_limit: total, old_generation })
}

/// Where the function is in the process: the mapping of this very file
/// (device and inode, checked through /proc/PID/map_files, which sees the
/// file as the loader opened it, overlay file systems included) that holds
/// its file offset.
fn runtime_address(pid: u32, binary: &ProcessBinary, f: &MaxReservedFn) -> Result<u64, LimitError> {
    let maps = procfs::process::Process::new(pid as i32)
        .and_then(|p| p.maps())
        .map_err(|e| LimitError::Maps { pid, reason: e.to_string() })?;
    for m in maps {
        let (start, end) = m.address;
        let holds = f.file_offset >= m.offset && f.file_offset - m.offset < end - start;
        if !holds || !matches!(m.pathname, procfs::process::MMapPath::Path(_)) {
            continue;
        }
        let same_file = std::fs::metadata(format!("/proc/{pid}/map_files/{start:x}-{end:x}"))
            .is_ok_and(|meta| (meta.dev(), meta.ino()) == binary.file);
        if same_file {
            return Ok(start + (f.file_offset - m.offset));
        }
    }
    Err(LimitError::NotMapped { pid, file: binary.display_path.clone() })
}

#[cfg(test)]
#[path = "limit_tests.rs"]
mod tests;
