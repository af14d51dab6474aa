//! Memory syscalls: mmap, munmap, mremap, brk, mprotect.
//!
//! Three attachment mechanisms share one recording path (the loader picks
//! the first the kernel allows; docs/architecture.md has the measurements):
//! - **BTF `sys_exit`** (preferred): one program for every syscall exit. With
//!   BTF, `regs` is a typed kernel pointer, so the syscall number is a plain
//!   load: non-memory syscalls (nearly all of them, on every process of the
//!   host) are rejected before any helper call or map lookup. The arguments
//!   come from the saved `pt_regs`, the result from the tracepoint argument,
//!   so no entry/exit pairing is needed.
//! - **raw `sys_exit`** (no kernel BTF): the same, but the registers must be
//!   copied with a helper, so the cheaper pid filter goes first.
//! - **classic `syscalls:sys_{enter,exit}_*`** (last resort): entry saves the
//!   arguments per thread, exit pairs them with the result.
//!
//! Every call of a traced process is counted in the kernel (exact, even if
//! the ring buffer overflows). Every *successful* call is streamed, because
//! exact mapped/committed figures need the address-space layout that only
//! userspace keeps (a munmap or mprotect range can cover several mappings).

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use heaptrace_common::{MemEvent, PendingSyscall, ProcCounters, kind, mem_op, mem_op_for_x86_64_syscall};

use crate::stacks;

use crate::{
    event::header,
    maps::{EVENTS, PENDING, QUIET, TRACED, atomic_add, count_drop},
};

/// Largest value the kernel returns as `-errno` from a syscall.
const MAX_ERRNO: u64 = 4095;

#[cfg(bpf_target_arch = "x86_64")]
#[btf_tracepoint(function = "sys_exit")]
pub fn mem_btf_sys_exit(ctx: BtfTracePointContext) -> i32 {
    let regs: *const aya_ebpf::bindings::pt_regs = ctx.arg(0);
    // SAFETY: in a BTF tracepoint the verifier types `regs` as the kernel's
    // `struct pt_regs *`, checks that each load hits a member, and makes the
    // load fault-safe. x86_64's pt_regs layout is ABI and matches the bindings.
    let nr = unsafe { (*regs).orig_rax };
    let op = mem_op_for_x86_64_syscall(nr);
    if op == 0 {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(counters) = TRACED.get_ptr_mut(&((pid_tgid >> 32) as u32)) else {
        return 0;
    };
    // SAFETY: as above.
    let args = unsafe { [(*regs).rdi, (*regs).rsi, (*regs).rdx, (*regs).r10, (*regs).r8] };
    let ret: u64 = ctx.arg(1);
    // SAFETY: as above.
    let user = unsafe { UserRegs { ip: (*regs).rip, sp: (*regs).rsp, fp: (*regs).rbp } };
    record(counters, pid_tgid, op, args, ret, user);
    0
}

#[cfg(bpf_target_arch = "x86_64")]
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn mem_sys_exit(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(counters) = TRACED.get_ptr_mut(&((pid_tgid >> 32) as u32)) else {
        return 0;
    };
    let regs: *const aya_ebpf::bindings::pt_regs = ctx.arg(0);
    // SAFETY: `regs` is the kernel's saved user register frame for this
    // syscall (sys_exit's first TP_PROTO argument); the helper copies it and
    // fails cleanly instead of faulting.
    let Ok(nr) = (unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(&(*regs).orig_rax) }) else {
        return 0;
    };
    let op = mem_op_for_x86_64_syscall(nr);
    if op == 0 {
        return 0;
    }
    // SAFETY: as above, for the whole frame.
    let Ok(r) = (unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(regs) }) else {
        return 0;
    };
    let ret: u64 = ctx.arg(1);
    let user = UserRegs { ip: r.rip, sp: r.rsp, fp: r.rbp };
    record(counters, pid_tgid, op, [r.rdi, r.rsi, r.rdx, r.r10, r.r8], ret, user);
    0
}

/// Offsets in the classic syscall tracepoint records (from their `format`
/// files, identical for every syscall): `__syscall_nr` at 8, the arguments at
/// 16 + 8*i on entry, `ret` at 16 on exit.
const TP_NR: usize = 8;
const TP_ARGS: usize = 16;
const TP_RET: usize = 16;

#[tracepoint]
pub fn mem_tp_enter(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if TRACED.get_ptr(&((pid_tgid >> 32) as u32)).is_none() {
        return 0;
    }
    // SAFETY: offsets come from the syscall tracepoint format (see above);
    // read_at uses bpf_probe_read_kernel and fails instead of faulting.
    let Ok(nr) = (unsafe { ctx.read_at::<i32>(TP_NR) }) else {
        return 0;
    };
    let op = mem_op_for_x86_64_syscall(nr as u64);
    if op == 0 {
        return 0;
    }
    let mut pending = PendingSyscall { op, ..Default::default() };
    let mut i = 0;
    while i < 5 {
        // SAFETY: as above; argument i is at TP_ARGS + 8*i.
        pending.args[i] = unsafe { ctx.read_at::<u64>(TP_ARGS + 8 * i) }.unwrap_or(0);
        i += 1;
    }
    let _ = PENDING.insert(&(pid_tgid as u32), &pending, 0);
    0
}

#[tracepoint]
pub fn mem_tp_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(pending) = PENDING.get_ptr(&tid) else {
        return 0;
    };
    // SAFETY: a successful lookup returns a pointer valid for this run.
    let pending = unsafe { *pending };
    let _ = PENDING.remove(&tid);
    let Some(counters) = TRACED.get_ptr_mut(&((pid_tgid >> 32) as u32)) else {
        return 0;
    };
    // SAFETY: offset from the syscall tracepoint format, read by helper.
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(TP_RET) }) else {
        return 0;
    };
    // The classic tracepoints carry no user registers: no stacks on this
    // last-resort path.
    record(counters, pid_tgid, pending.op, pending.args, ret as u64, UserRegs::NONE);
    0
}

/// The user registers a stack walk starts from.
#[derive(Clone, Copy)]
struct UserRegs {
    ip: u64,
    sp: u64,
    fp: u64,
}

impl UserRegs {
    const NONE: Self = UserRegs { ip: 0, sp: 0, fp: 0 };
}

/// PROT_WRITE: a mapping or range that can hold data.
const PROT_WRITE: u64 = 2;

/// Whether this successful call allocates enough to be worth a stack: an
/// mmap of writable memory or an mprotect making memory writable (V8
/// commits its heap pages that way, glibc grows its arenas), at least
/// `min` bytes, or a brk that moves the break. Reservations (PROT_NONE),
/// unmaps and small permission flips get none.
#[inline(always)]
fn wants_stack(op: u32, args: &[u64; 5], min: u64) -> bool {
    match op {
        mem_op::MMAP | mem_op::MPROTECT => args[2] & PROT_WRITE != 0 && args[1] >= min,
        mem_op::BRK => args[0] != 0,
        _ => false,
    }
}

/// Counts the call and, if it succeeded, streams it.
#[inline(always)]
fn record(counters: *mut ProcCounters, pid_tgid: u64, op: u32, args: [u64; 5], ret: u64, user: UserRegs) {
    // brk never fails with -errno: it returns the (possibly unchanged) break.
    let failed = op != mem_op::BRK && ret > u64::MAX - MAX_ERRNO;
    // SAFETY: `counters` comes from a successful TRACED lookup in this run and
    // points into a map value; fields are aligned u64s.
    unsafe {
        if failed {
            atomic_add(&raw mut (*counters).failed_calls, 1);
            return;
        }
        if (op as usize) < mem_op::COUNT {
            atomic_add(&raw mut (*counters).calls[op as usize], 1);
        }
    }

    let min = stacks::min_bytes();
    let stack = if min != 0 && user.sp != 0 && wants_stack(op, &args, min) {
        stacks::capture(user.ip, user.sp, user.fp)
    } else {
        0
    };
    let Some(mut entry) = EVENTS.reserve::<MemEvent>(0) else {
        count_drop();
        return;
    };
    // Reserved and written in place (no copy): this is the hot path.
    entry.write(MemEvent { header: header(kind::MEM, pid_tgid), op, _pad: 0, args, ret, stack });
    entry.submit(QUIET);
}
