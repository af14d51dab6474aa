//! User stacks at allocating syscalls, walked by frame pointers.
//!
//! Official Node builds keep frame pointers in V8's C++ and in the code V8
//! generates, so following `rbp` from the syscall crosses from libc through
//! V8 into JS frames. The kernel's own walker (`bpf_get_stackid`) would give
//! the return addresses, but not the word a JS frame keeps at `fp - 16`:
//! its `JSFunction`, the only way to name an interpreted or JIT-compiled
//! function from outside. So the walk is done here, into a per-CPU scratch
//! record, and each distinct stack is kept once in an LRU map keyed by a
//! hash. Events carry the key; the collector reads a stack the first time
//! it sees its key and names it once.
//!
//! Cost: one user-memory read per frame (32 bytes: the function slot and
//! the frame record); the frame count is bounded by [`MAX_STACK_FRAMES`].
//! Measured in bench/results/stacks.md.

use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use heaptrace_common::{MAX_STACK_FRAMES, MAX_STACKS, StackTrace, stack_stat};

/// Stack key → stack. See heaptrace_common::StackTrace.
#[map]
pub static STACKS: LruHashMap<u64, StackTrace> = LruHashMap::with_max_entries(MAX_STACKS, 0);

/// The record being filled (too big for the 512-byte BPF stack).
#[map]
static STACK_SCRATCH: PerCpuArray<StackTrace> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU counters, indexed by heaptrace_common::stack_stat.
#[map]
pub static STACK_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stack_stat::COUNT, 0);

/// Smallest mmap or mprotect that gets a stack, set at load;
/// 0 turns stack capture off (`--no-stacks`).
#[unsafe(no_mangle)]
static STACK_MIN_BYTES: u64 = 0;

/// V8 tags heap-object pointers with 01 in their low two bits.
const TAG_MASK: u64 = 3;
const HEAP_OBJECT_TAG: u64 = 1;

/// The smallest size that gets a stack; 0 when capture is off.
#[inline(always)]
pub fn min_bytes() -> u64 {
    // SAFETY: a global of the object, set by the loader before load; the
    // volatile read keeps the compiler from folding the default.
    unsafe { core::ptr::read_volatile(&STACK_MIN_BYTES) }
}

#[inline(always)]
fn bump(stat: u32) {
    if let Some(slot) = STACK_STATS.get_ptr_mut(stat) {
        // SAFETY: a per-CPU slot from a successful lookup, aligned, valid for
        // this run; atomic because a run can be preempted by another run of
        // a program on the same CPU (see maps::count_drop).
        unsafe { crate::maps::atomic_add(slot, 1) };
    }
}

#[inline(always)]
fn read_user(addr: u64) -> u64 {
    // SAFETY: the helper copies from user memory of the current task and
    // fails cleanly (returning an error) on a bad address.
    unsafe { bpf_probe_read_user(addr as *const u64) }.unwrap_or(0)
}

/// The 32 bytes around a frame pointer, in one read: the word at `fp - 16`
/// (a JS frame's JSFunction), `fp - 8`, the caller's frame pointer at `fp`
/// and the return address at `fp + 8`. All zero if unreadable.
#[inline(always)]
fn read_frame(fp: u64) -> [u64; 4] {
    // SAFETY: as in read_user: a fault-safe copy from the current task's
    // user memory.
    unsafe { bpf_probe_read_user((fp - 16) as *const [u64; 4]) }.unwrap_or([0; 4])
}

/// Most a stack may be above a frame in it (the default 8 MiB thread stack).
const MAX_STACK_SPAN: u64 = 8 << 20;

/// Words scanned above the stack pointer for a saved frame record: glibc's
/// malloc path (malloc or calloc, _int_malloc, sysmalloc) keeps well under
/// 1 KiB of frames.
const SCAN_WORDS: u64 = 128;

/// Whether `fp` looks like a frame record of this stack: aligned, above the
/// stack pointer, within a stack's span, and linking to one further up.
#[inline(always)]
fn is_frame_record(sp: u64, fp: u64) -> bool {
    if fp & 7 != 0 || fp <= sp || fp - sp > MAX_STACK_SPAN {
        return false;
    }
    let next = read_user(fp);
    next > fp && next - fp <= MAX_STACK_SPAN && read_user(fp + 8) != 0
}

/// The first word above `from` that is the address of a frame record (see
/// [`is_frame_record`]) whose caller's record is one too, or 0. A single
/// record is easy to fake: a structure on the stack that holds a pointer
/// further up the stack and any non-zero word looks like one; two linked
/// ones rarely. Userspace still checks that the return addresses found
/// from there are in code, and marks where the scan resumed.
#[inline(always)]
fn scan_for_frame_record(from: u64) -> u64 {
    for i in 0..SCAN_WORDS {
        let at = from + 8 * i;
        let word = read_user(at);
        if word > at && is_frame_record(at, word) && is_frame_record(word, read_user(word)) {
            return word;
        }
    }
    0
}

/// Walks the current task's user stack from its registers at the syscall
/// and returns the stack's key (never 0), or 0 if nothing was captured.
#[inline(always)]
pub fn capture(ip: u64, sp: u64, fp: u64) -> u64 {
    let Some(trace) = STACK_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: a per-CPU array slot from a successful lookup, valid for this
    // run and used by this CPU only.
    let trace = unsafe { &mut *trace };
    bump(stack_stat::CAPTURED);

    // FNV-1a over the frames. A slot goes into the key only when it looks
    // like a tagged V8 pointer: native frames keep arbitrary locals there,
    // which would otherwise make every call its own stack.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |v: u64| {
        hash ^= v;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    };

    trace.pcs[0] = ip;
    trace.slots[0] = 0;
    mix(ip);
    // The libc wrapper is a leaf: the return address into its caller is at
    // the stack pointer, and `fp` is still the caller's frame.
    let ret = read_user(sp);
    let mut scanned = 0;
    let fp = if is_frame_record(sp, fp) {
        fp
    } else {
        // `rbp` is no frame pointer here: a function between the syscall
        // and the nearest frame-pointer code (glibc's malloc internals) used
        // it as a general register. That function saved the caller's value
        // on the stack, so the frame record is there: scan for it.
        bump(stack_stat::SCANNED);
        scanned = 1;
        let found = scan_for_frame_record(sp + 8);
        if found == 0 {
            bump(stack_stat::SCAN_FAILED);
        }
        found
    };
    // One read per frame (see read_frame): this frame's slot and record.
    let mut frame = if fp != 0 { read_frame(fp) } else { [0; 4] };
    // After a scan, the frame pcs[1] runs in has no known frame pointer.
    let slot = if scanned == 0 { frame[0] } else { 0 };
    trace.pcs[1] = ret;
    trace.slots[1] = slot;
    mix(ret);
    if slot & TAG_MASK == HEAP_OBJECT_TAG {
        mix(slot);
    }
    let mut len: u32 = 2;
    let mut fp = fp;
    let mut truncated = 0;
    for i in 2..MAX_STACK_FRAMES {
        if fp == 0 {
            break;
        }
        let (next_fp, ret) = (frame[2], frame[3]);
        if ret == 0 {
            break;
        }
        // The chain must go up the stack (callers live at higher addresses):
        // past a frame that breaks it, what follows would be guesses. Its
        // return address is still right; its frame's slot is not known.
        let linked = next_fp > fp && next_fp - fp <= MAX_STACK_SPAN && next_fp & 7 == 0;
        let next = if linked { read_frame(next_fp) } else { [0; 4] };
        let slot = next[0];
        trace.pcs[i] = ret;
        trace.slots[i] = slot;
        mix(ret);
        if slot & TAG_MASK == HEAP_OBJECT_TAG {
            mix(slot);
        }
        len = i as u32 + 1;
        if !linked {
            break;
        }
        if i == MAX_STACK_FRAMES - 1 {
            truncated = 1;
        }
        fp = next_fp;
        frame = next;
    }
    trace.len = len;
    trace.truncated = truncated;
    trace.scanned_from = if scanned != 0 && len > 2 { 2 } else { 0 };
    let key = if hash == 0 { 1 } else { hash };
    if STACKS.get_ptr(&key).is_none() {
        // Insert only what is new: most allocations repeat a known stack, and
        // a lookup is cheaper than copying the record. Slots past `len` keep
        // the scratch's older values; the reader looks at `len` only.
        if STACKS.insert(&key, trace, 0).is_ok() {
            bump(stack_stat::INSERTED);
        }
    }
    if truncated != 0 {
        bump(stack_stat::TRUNCATED);
    }
    key
}
