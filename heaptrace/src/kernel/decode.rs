//! Ring-buffer bytes → core events. Pure: unit-tested on bytes built from
//! the shared wire types.

use heaptrace_common::{
    EventHeader, ExitEvent, GC_REASON_UNKNOWN, GcEvent, GcTotals, LifecycleEvent, MemEvent, OomEvent,
    ProcCounters, gc_flags, kind, lifecycle_flags, mem_op,
};

use crate::core::{
    CallCounts, Event, EventKind, MemOp,
    input::{GcPause, GcWork},
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
            EventKind::Mem(mem_op(&e)?)
        }
        kind::EXIT => {
            let e: ExitEvent = read(bytes).ok_or(truncated)?;
            EventKind::Exit { calls: call_counts(&e.counters), gc_work: gc_work(&e.gc), exit_code: None }
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
                heap: 0,
            })
        }
        kind::V8_OOM => EventKind::V8OutOfMemory { memory: None },
        other => return Err(DecodeError::UnknownKind(other)),
    };
    Ok(Event { pid: header.pid, tid: header.tid, ts_ns: header.ts_ns, cgroup_id: header.cgroup_id, kind })
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
        };
        let ev = decode(&bytes(&e)).unwrap();
        assert_eq!((ev.pid, ev.tid, ev.ts_ns, ev.cgroup_id), (7, 8, 99, 5));
        assert_eq!(
            ev.kind,
            EventKind::Mem(MemOp::Mmap { addr: 0x7f00_0000_0000, len: 4096, prot: 3, flags: 0x22, fd: -1 })
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
        };
        assert_eq!(
            decode(&bytes(&e)).unwrap().kind,
            EventKind::Mem(MemOp::Mremap { old_addr: 1, old_len: 2, new_addr: 9, new_len: 3, flags: 1 })
        );
        e.op = mem_op::BRK;
        assert_eq!(decode(&bytes(&e)).unwrap().kind, EventKind::Mem(MemOp::Brk { brk: 9 }));
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
            heap: 0,
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

    #[test]
    fn v8_out_of_memory_is_a_bare_header() {
        assert_eq!(
            decode(&bytes(&header(kind::V8_OOM))).unwrap().kind,
            EventKind::V8OutOfMemory { memory: None }
        );
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
