//! Ring-buffer bytes → core events. Pure: unit-tested on bytes built from
//! the shared wire types.

use heaptrace_common::{
    EventHeader, ExitEvent, FatalSignalEvent, GC_REASON_UNKNOWN, GcEvent, GcTotals, LifecycleEvent, MemEvent,
    MemoryReading, OomEvent, ProcCounters, V8OomEvent, exit_flags, gc_flags, kind, lifecycle_flags, mem_op,
    memory_flags,
};

use crate::core::{
    CallCounts, Event, EventKind, MemOp,
    input::{GcPause, GcWork, ProcStatus},
};

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the record its kind promises.
    Truncated {
        kind: u32,
        len: usize,
    },
    UnknownKind(u32),
    UnknownMemOp(u32),
}

/// Reads a `#[repr(C)]` wire type from the start of `bytes`.
fn read<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: the length is checked above; read_unaligned copes with any
    // alignment; `T: Pod` promises that every bit pattern is a valid T.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let header: EventHeader = read(bytes).ok_or(DecodeError::Truncated { kind: 0, len: bytes.len() })?;
    let truncated = DecodeError::Truncated { kind: header.kind, len: bytes.len() };
    let kind = match header.kind {
        kind::MEM => {
            let e: MemEvent = read(bytes).ok_or(truncated)?;
            EventKind::Mem { op: mem_op(&e)?, stack: (e.stack != 0).then_some(e.stack) }
        }
        kind::EXIT => {
            let e: ExitEvent = read(bytes).ok_or(truncated)?;
            EventKind::Exit {
                calls: call_counts(&e.counters),
                gc_work: gc_work(&e.gc),
                exit_code: (e.flags & exit_flags::STATUS_KNOWN != 0).then_some(e.status),
            }
        }
        kind::EXEC | kind::FORK => {
            let e: LifecycleEvent = read(bytes).ok_or(truncated)?;
            let comm = comm(&e.comm);
            if header.kind == kind::FORK {
                EventKind::Fork { parent_pid: e.parent_pid, comm }
            } else {
                EventKind::Exec {
                    comm,
                    traced: e.flags & lifecycle_flags::TRACED != 0,
                    was_traced: e.flags & lifecycle_flags::WAS_TRACED != 0,
                    undecided: e.flags & lifecycle_flags::UNDECIDED != 0,
                }
            }
        }
        kind::OOM => {
            let e: OomEvent = read(bytes).ok_or(truncated)?;
            EventKind::OomVictim {
                anon_rss: e.anon_rss_kb * 1024,
                file_rss: e.file_rss_kb * 1024,
                shmem_rss: e.shmem_rss_kb * 1024,
                total_vm: e.total_vm_kb * 1024,
            }
        }
        kind::GC => {
            let e: GcEvent = read(bytes).ok_or(truncated)?;
            EventKind::Gc(GcPause {
                pause_ns: e.pause_ns,
                heap_before: e.heap_before,
                heap_after: e.heap_after,
                collector: (e.flags & gc_flags::COLLECTOR_KNOWN != 0).then_some(e.collector),
                reason: (e.reason != GC_REASON_UNKNOWN).then_some(e.reason),
                v8_timestamps: e.flags & gc_flags::V8_TIMESTAMPS != 0,
                marking_steps: e.marking_steps,
                marking_step_ns: e.marking_step_ns,
                marking_start_ns: e.marking_start_ns,
                heap: e.heap,
            })
        }
        kind::V8_OOM => {
            let e: V8OomEvent = read(bytes).ok_or(truncated)?;
            EventKind::V8OutOfMemory { memory: memory(&e.memory) }
        }
        kind::FATAL_SIGNAL => {
            let e: FatalSignalEvent = read(bytes).ok_or(truncated)?;
            EventKind::FatalSignal { signal: e.signal, memory: memory(&e.memory) }
        }
        other => return Err(DecodeError::UnknownKind(other)),
    };
    Ok(Event { pid: header.pid, tid: header.tid, ts_ns: header.ts_ns, cgroup_id: header.cgroup_id, kind })
}

/// A kernel memory reading (bytes already), if it was made.
fn memory(m: &MemoryReading) -> Option<ProcStatus> {
    (m.flags & memory_flags::READ != 0).then_some(ProcStatus {
        vm_size: m.vm,
        rss_anon: m.rss_anon,
        rss_file: m.rss_file,
        rss_shmem: m.rss_shmem,
    })
}

/// A kernel comm: NUL-padded, not necessarily UTF-8.
fn comm(raw: &[u8; 16]) -> String {
    let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..len]).into_owned()
}

pub fn call_counts(c: &ProcCounters) -> CallCounts {
    CallCounts {
        mmap: c.calls[mem_op::MMAP as usize],
        munmap: c.calls[mem_op::MUNMAP as usize],
        mremap: c.calls[mem_op::MREMAP as usize],
        brk: c.calls[mem_op::BRK as usize],
        mprotect: c.calls[mem_op::MPROTECT as usize],
        failed: c.failed_calls,
    }
}

pub fn gc_work(t: &GcTotals) -> GcWork {
    GcWork {
        marking_steps: t.marking_steps,
        marking_step_ns: t.marking_step_ns,
        marking_starts: t.marking_starts,
        marking_start_ns: t.marking_start_ns,
        weak_callbacks: t.weak_callbacks,
        weak_callback_ns: t.weak_callback_ns,
    }
}

fn mem_op(e: &MemEvent) -> Result<MemOp, DecodeError> {
    let [a0, a1, a2, a3, a4] = e.args;
    Ok(match e.op {
        mem_op::MMAP => {
            MemOp::Mmap { addr: e.ret, len: a1, prot: a2 as u32, flags: a3 as u32, fd: a4 as i32 }
        }
        mem_op::MUNMAP => MemOp::Munmap { addr: a0, len: a1 },
        mem_op::MREMAP => {
            MemOp::Mremap { old_addr: a0, old_len: a1, new_addr: e.ret, new_len: a2, flags: a3 as u32 }
        }
        mem_op::BRK => MemOp::Brk { brk: e.ret },
        mem_op::MPROTECT => MemOp::Mprotect { addr: a0, len: a1, prot: a2 as u32 },
        other => return Err(DecodeError::UnknownMemOp(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes<T: aya::Pod>(v: &T) -> Vec<u8> {
        // SAFETY: `T: Pod` has no padding bytes left uninitialised; viewing
        // it as bytes for the length of T is sound.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn header(kind: u32) -> EventHeader {
        EventHeader { kind, pid: 7, tid: 8, _pad: 0, ts_ns: 99, cgroup_id: 5 }
    }

    #[test]
    fn mmap_takes_the_address_from_the_result() {
        let e = MemEvent {
            header: header(kind::MEM),
            op: mem_op::MMAP,
            _pad: 0,
            args: [0, 4096, 3, 0x22, u64::MAX],
            ret: 0x7f00_0000_0000,
            stack: 0,
        };
        let ev = decode(&bytes(&e)).unwrap();
        assert_eq!((ev.pid, ev.tid, ev.ts_ns, ev.cgroup_id), (7, 8, 99, 5));
        assert_eq!(
            ev.kind,
            EventKind::Mem {
                op: MemOp::Mmap { addr: 0x7f00_0000_0000, len: 4096, prot: 3, flags: 0x22, fd: -1 },
                stack: None
            }
        );
    }

    #[test]
    fn mremap_and_brk() {
        let mut e = MemEvent {
            header: header(kind::MEM),
            op: mem_op::MREMAP,
            _pad: 0,
            args: [1, 2, 3, 1, 0],
            ret: 9,
            stack: 0,
        };
        assert_eq!(
            decode(&bytes(&e)).unwrap().kind,
            EventKind::Mem {
                op: MemOp::Mremap { old_addr: 1, old_len: 2, new_addr: 9, new_len: 3, flags: 1 },
                stack: None
            }
        );
        e.op = mem_op::BRK;
        e.stack = 0xabc;
        assert_eq!(
            decode(&bytes(&e)).unwrap().kind,
            EventKind::Mem { op: MemOp::Brk { brk: 9 }, stack: Some(0xabc) }
        );
    }

    #[test]
    fn oom_sizes_become_bytes() {
        let e = OomEvent {
            header: header(kind::OOM),
            total_vm_kb: 1,
            anon_rss_kb: 2,
            file_rss_kb: 3,
            shmem_rss_kb: 4,
        };
        assert_eq!(
            decode(&bytes(&e)).unwrap().kind,
            EventKind::OomVictim { anon_rss: 2048, file_rss: 3072, shmem_rss: 4096, total_vm: 1024 }
        );
    }

    #[test]
    fn gc_pauses() {
        let e = GcEvent {
            header: header(kind::GC),
            pause_ns: 512_000,
            heap_before: 9 << 20,
            heap_after: 3 << 20,
            collector: 1,
            reason: 9,
            flags: gc_flags::V8_TIMESTAMPS | gc_flags::COLLECTOR_KNOWN,
            marking_steps: 91,
            marking_step_ns: 9_200_000,
            marking_start_ns: 300_000,
            heap: 0x3a_0000_8000,
        };
        let want = GcPause {
            pause_ns: 512_000,
            heap_before: 9 << 20,
            heap_after: 3 << 20,
            collector: Some(1),
            reason: Some(9),
            v8_timestamps: true,
            marking_steps: 91,
            marking_step_ns: 9_200_000,
            marking_start_ns: 300_000,
            heap: 0x3a_0000_8000,
        };
        assert_eq!(decode(&bytes(&e)).unwrap().kind, EventKind::Gc(want));
        let unknown = GcEvent { header: header(kind::GC), reason: GC_REASON_UNKNOWN, ..Default::default() };
        let EventKind::Gc(p) = decode(&bytes(&unknown)).unwrap().kind else { panic!() };
        assert_eq!((p.collector, p.reason, p.v8_timestamps), (None, None, false));
    }

    #[test]
    fn bad_records_are_errors_not_panics() {
        assert_eq!(decode(&[1, 2, 3]), Err(DecodeError::Truncated { kind: 0, len: 3 }));
        assert_eq!(decode(&bytes(&header(42))), Err(DecodeError::UnknownKind(42)));
        assert_eq!(
            decode(&bytes(&header(kind::MEM))),
            Err(DecodeError::Truncated { kind: kind::MEM, len: 32 })
        );
        let e = MemEvent { header: header(kind::MEM), op: 77, ..Default::default() };
        assert_eq!(decode(&bytes(&e)), Err(DecodeError::UnknownMemOp(77)));
        let mut exit = ExitEvent { header: header(kind::EXIT), ..Default::default() };
        exit.counters.calls[mem_op::MMAP as usize] = 7;
        exit.counters.failed_calls = 2;
        exit.gc.marking_steps = 3;
        let EventKind::Exit { calls, gc_work, .. } = decode(&bytes(&exit)).unwrap().kind else { panic!() };
        assert_eq!((calls.mmap, calls.failed, gc_work.marking_steps), (7, 2, 3));
        assert_eq!(
            decode(&bytes(&header(kind::EXEC))),
            Err(DecodeError::Truncated { kind: kind::EXEC, len: 32 })
        );
    }

    fn reading() -> MemoryReading {
        MemoryReading {
            rss_anon: 300 << 20,
            rss_file: 40 << 20,
            rss_shmem: 1 << 20,
            vm: 11 << 30,
            flags: memory_flags::READ,
            _pad: 0,
        }
    }

    fn status() -> ProcStatus {
        ProcStatus { vm_size: 11 << 30, rss_anon: 300 << 20, rss_file: 40 << 20, rss_shmem: 1 << 20 }
    }

    #[test]
    fn v8_out_of_memory_carries_the_kernels_reading() {
        let mut e = V8OomEvent { header: header(kind::V8_OOM), memory: reading() };
        assert_eq!(decode(&bytes(&e)).unwrap().kind, EventKind::V8OutOfMemory { memory: Some(status()) });
        e.memory.flags = 0; // offsets unknown, or the task had no mm
        assert_eq!(decode(&bytes(&e)).unwrap().kind, EventKind::V8OutOfMemory { memory: None });
        assert_eq!(
            decode(&bytes(&header(kind::V8_OOM))),
            Err(DecodeError::Truncated { kind: kind::V8_OOM, len: 32 })
        );
    }

    #[test]
    fn fatal_signals() {
        let e =
            FatalSignalEvent { header: header(kind::FATAL_SIGNAL), signal: 9, _pad: 0, memory: reading() };
        assert_eq!(
            decode(&bytes(&e)).unwrap().kind,
            EventKind::FatalSignal { signal: 9, memory: Some(status()) }
        );
    }

    #[test]
    fn exit_status_only_when_read() {
        let mut e = ExitEvent { header: header(kind::EXIT), status: 3 << 8, ..Default::default() };
        let exit_code = |e: &ExitEvent| {
            let EventKind::Exit { exit_code, .. } = decode(&bytes(e)).unwrap().kind else { panic!() };
            exit_code
        };
        assert_eq!(exit_code(&e), None);
        e.flags = exit_flags::STATUS_KNOWN;
        assert_eq!(exit_code(&e), Some(0x300));
        e.status = 0x86; // SIGABRT, core dumped
        assert_eq!(exit_code(&e), Some(0x86));
    }

    #[test]
    fn exec_and_fork() {
        let mut e = LifecycleEvent { header: header(kind::EXEC), ..Default::default() };
        e.comm[..4].copy_from_slice(b"node");
        e.flags = lifecycle_flags::TRACED | lifecycle_flags::WAS_TRACED;
        assert_eq!(
            decode(&bytes(&e)).unwrap().kind,
            EventKind::Exec { comm: "node".into(), traced: true, was_traced: true, undecided: false }
        );
        e.header.kind = kind::FORK;
        e.parent_pid = 41;
        e.comm = [b'x'; 16]; // a full-length comm has no NUL
        assert_eq!(
            decode(&bytes(&e)).unwrap().kind,
            EventKind::Fork { parent_pid: 41, comm: "x".repeat(16) }
        );
    }
}
