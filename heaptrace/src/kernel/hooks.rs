//! Attaching the kernel programs that are always on: the memory-syscall
//! hook (the cheapest mechanism this kernel allows, with fallbacks) and the
//! lifecycle tracepoints. The V8 uprobes are attached on demand, through
//! [`super::Tracer::attach_uprobe`].

use aya::{
    Ebpf,
    programs::{BtfTracePoint, ProgramError, RawTracePoint, TracePoint},
};

use super::KernelError;
use crate::core::MemHook;

/// How memory syscalls are hooked (the `--mem-hook` flag).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MemHookChoice {
    /// The cheapest mechanism this kernel allows, falling back in order.
    Auto,
    /// One BTF tracepoint on `sys_exit` that rejects non-memory syscalls with
    /// a plain load before anything else. Needs kernel BTF.
    BtfTracepoint,
    /// One raw tracepoint on `sys_exit` (pid filter first, then the syscall
    /// number, read with a helper). For kernels without BTF.
    RawTracepoint,
    /// Classic `syscalls:sys_{enter,exit}_*` tracepoints with entry/exit
    /// pairing: two programs per memory syscall, but allowed almost everywhere.
    Tracepoint,
}

type HookAttach = fn(&mut Ebpf) -> Result<(), KernelError>;

/// Mechanisms in order of preference (cheapest first; see docs/architecture.md).
const MEM_HOOKS: [(MemHook, HookAttach); 3] = [
    (MemHook::BtfTracepoint, attach_btf_sys_exit),
    (MemHook::RawTracepoint, attach_raw_sys_exit),
    (MemHook::Tracepoint, attach_syscall_tracepoints),
];

/// Attaches the chosen memory hook, or with `Auto` the first that works;
/// fallbacks taken are added to `notes`.
pub fn attach_mem_hook(
    ebpf: &mut Ebpf,
    choice: MemHookChoice,
    notes: &mut Vec<String>,
) -> Result<MemHook, KernelError> {
    let wanted = match choice {
        MemHookChoice::Auto => None,
        MemHookChoice::BtfTracepoint => Some(MemHook::BtfTracepoint),
        MemHookChoice::RawTracepoint => Some(MemHook::RawTracepoint),
        MemHookChoice::Tracepoint => Some(MemHook::Tracepoint),
    };
    if let Some((hook, attach)) = MEM_HOOKS.iter().find(|(h, _)| Some(*h) == wanted) {
        attach(ebpf)?;
        return Ok(*hook);
    }
    let mut failures = Vec::new();
    for (hook, attach) in MEM_HOOKS {
        match attach(ebpf) {
            Ok(()) => {
                notes.extend(failures.into_iter().map(|f| format!("memory hook fallback: {f}")));
                return Ok(hook);
            }
            Err(e) => failures.push(format!("{hook} unavailable ({e})")),
        }
    }
    Err(KernelError::NoMemHook(failures.join("; ")))
}

fn attach_btf_sys_exit(ebpf: &mut Ebpf) -> Result<(), KernelError> {
    let btf = aya::Btf::from_sys_fs()
        .map_err(|e| KernelError::NoMemHook(format!("kernel BTF unavailable: {e}")))?;
    let program = "mem_btf_sys_exit";
    let prog: &mut BtfTracePoint = program_mut(ebpf, program)?;
    prog.load("sys_exit", &btf).map_err(|source| KernelError::Program {
        program,
        action: "loaded",
        source,
    })?;
    prog.attach().map_err(|source| KernelError::Program { program, action: "attached", source })?;
    Ok(())
}

fn attach_raw_sys_exit(ebpf: &mut Ebpf) -> Result<(), KernelError> {
    let program = "mem_sys_exit";
    let prog: &mut RawTracePoint = program_mut(ebpf, program)?;
    prog.load().map_err(|source| KernelError::Program { program, action: "loaded", source })?;
    prog.attach("sys_exit").map_err(|source| KernelError::Program { program, action: "attached", source })?;
    Ok(())
}

const SYSCALLS: [&str; 5] = ["mmap", "munmap", "mremap", "brk", "mprotect"];

fn attach_syscall_tracepoints(ebpf: &mut Ebpf) -> Result<(), KernelError> {
    for (program, phase) in [("mem_tp_enter", "enter"), ("mem_tp_exit", "exit")] {
        let prog: &mut TracePoint = program_mut(ebpf, program)?;
        prog.load().map_err(|source| KernelError::Program { program, action: "loaded", source })?;
        for syscall in SYSCALLS {
            prog.attach("syscalls", &format!("sys_{phase}_{syscall}"))
                .map_err(|source| KernelError::Program { program, action: "attached", source })?;
        }
    }
    Ok(())
}

/// Loads and attaches a classic tracepoint program.
pub fn attach_tracepoint(
    ebpf: &mut Ebpf,
    program: &'static str,
    category: &str,
    name: &str,
) -> Result<(), KernelError> {
    let prog: &mut TracePoint = program_mut(ebpf, program)?;
    prog.load().map_err(|source| KernelError::Program { program, action: "loaded", source })?;
    prog.attach(category, name).map_err(|source| KernelError::Program {
        program,
        action: "attached",
        source,
    })?;
    Ok(())
}

/// A program of the object, as its type.
pub fn program_mut<'a, T>(ebpf: &'a mut Ebpf, program: &'static str) -> Result<&'a mut T, KernelError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let p =
        ebpf.program_mut(program).ok_or(KernelError::MissingFromObject { what: "program", name: program })?;
    p.try_into().map_err(|source| KernelError::Program { program, action: "found", source })
}
