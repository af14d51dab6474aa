//! Records built in tests, as the collector would emit them.

use crate::core::{
    MemHook, Record,
    gc::GcKind,
    input::Origin,
    record::{
        Attached, Death, DeathCause, DeathMemory, Exit, Gc, GroupSnapshot, LimitKind, MemoryKind,
        MemorySource, SCHEMA_VERSION, Snapshot, Started, Summary, Verdict, VerdictState,
    },
    sites::{AllocationSite, Frame, FrameKind},
};

pub const MIB: u64 = 1 << 20;

pub fn start(ts: f64, processes: usize) -> Record {
    Record::Start(Started {
        ts,
        schema_version: SCHEMA_VERSION,
        selection: "--pid 42".into(),
        follows_new_processes: false,
        processes,
        mem_hook: MemHook::BtfTracepoint,
    })
}

pub fn attach(ts: f64, pid: u32, comm: &str) -> Record {
    Record::Attach(Attached {
        ts,
        pid,
        comm: comm.into(),
        origin: Origin::Start,
        gc_probes: true,
        cgroup_id: 9,
        container: None,
        ns_pid: None,
    })
}

pub fn leak(slope: f64, time_to_limit_s: f64) -> Verdict {
    Verdict {
        state: VerdictState::Leak,
        memory: Some(MemoryKind::JsHeap),
        slope_bytes_per_s: Some(slope),
        basis: None,
        time_to_limit_s: Some(time_to_limit_s),
        limit: Some(LimitKind::V8Heap),
        limit_bytes: Some(4096 * MIB),
        evidence: "the JS heap's floor rises".into(),
        site: None,
    }
}

/// A snapshot at `ts` with this RSS, committed memory and GC pause total.
pub fn snapshot(ts: f64, pid: u32, comm: &str, rss: u64, gc_pause_ns: u64, verdict: Verdict) -> Record {
    Record::Snapshot(Snapshot {
        ts,
        rss_bytes: rss,
        rss_anon_bytes: rss,
        vm_bytes: rss * 4,
        mapped_bytes: rss,
        mapped_anon_bytes: rss,
        committed_bytes: rss / 2,
        rss_growth_bytes_per_s: 1024.0 * ts.fract(),
        cgroup_id: 9,
        gc_pause_ns,
        heap_after_last_major_bytes: Some(rss / 4),
        v8_heap_limit_bytes: Some(4096 * MIB),
        native_bytes: rss / 8,
        verdict,
        ..Snapshot::blank(pid, comm)
    })
}

pub fn gc(ts: f64, pid: u32, major: bool, pause_ns: u64, before: u64, after: u64) -> Record {
    Record::Gc(Gc {
        ts,
        pid,
        tid: pid,
        kind: if major { GcKind::Major } else { GcKind::Minor },
        collector: if major { "Mark-Compact" } else { "Scavenge" },
        reason: "allocation failure",
        pause_ns,
        heap_before_bytes: before,
        heap_after_bytes: after,
        marking_steps: 0,
        marking_step_ns: 0,
        marking_start_ns: 0,
        cgroup_id: 9,
        container: None,
    })
}

pub fn group(ts: f64, path: &str, rss: u64) -> Record {
    Record::Group(GroupSnapshot {
        ts,
        cgroup_path: path.into(),
        cgroup_id: 9,
        container: None,
        processes: 1,
        exited_processes: 0,
        rss_bytes: rss,
        rss_growth_bytes: 0,
        committed_growth_bytes: 0,
        memory_usage_bytes: Some(rss * 2),
        memory_usage_growth_bytes: Some(0),
        memory_limit_bytes: Some(1024 * MIB),
        memory_headroom_bytes: Some(1024 * MIB - rss * 2),
        memory_source: None,
        gc_count: 0,
        gc_pause_ns: 0,
        verdict: Verdict::unknown(""),
    })
}

pub fn exit(ts: f64, pid: u32, comm: &str) -> Record {
    Record::Exit(Exit {
        ts,
        pid,
        comm: comm.into(),
        oom_killed: false,
        traced_s: ts,
        cgroup_id: 9,
        container: None,
    })
}

pub fn site(function: &str, line: u32, live: u64) -> AllocationSite {
    AllocationSite {
        bytes: live * 2,
        live_bytes: live,
        live_v8_bytes: 0,
        count: 3,
        frames: vec![Frame {
            function: function.into(),
            file: Some("/srv/app.js".into()),
            line: Some(line),
            kind: FrameKind::Js,
            build_id: None,
        }],
    }
}

pub fn death(ts: f64, pid: u32, comm: &str, sites: Vec<AllocationSite>) -> Record {
    Record::Death(Death {
        ts,
        pid,
        comm: comm.into(),
        cause: DeathCause::V8Oom,
        signal: Some("SIGABRT".into()),
        memory: DeathMemory {
            rss_anon_bytes: 0,
            rss_file_bytes: 0,
            rss_shmem_bytes: 0,
            vm_bytes: 0,
            source: MemorySource::Kernel,
            js_heap_used_bytes: None,
            v8_heap_limit_bytes: None,
            v8_old_generation_limit_bytes: None,
            cgroup_usage_bytes: None,
            cgroup_limit_bytes: None,
        },
        verdict: None,
        allocation_sites: sites,
        heap: None,
        explanation: "V8 ran out of heap after its floor rose".into(),
        cgroup_path: String::new(),
        cgroup_id: 9,
        container: None,
        dump_path: None,
        flight: None,
    })
}

pub fn summary(ts: f64) -> Record {
    Record::Summary(Summary {
        ts,
        duration_s: ts,
        mem_hook: MemHook::BtfTracepoint,
        dropped_events: 0,
        exited_processes: 0,
        processes_not_listed: 0,
        state: Default::default(),
        groups: Vec::new(),
        processes: Vec::new(),
    })
}

/// A leaking process over `seconds`: a snapshot a second (RSS up 1 MiB a
/// second), a minor GC each second and a major one every tenth.
pub fn leaking_run(pid: u32, seconds: u32) -> Vec<Record> {
    let mut out = vec![start(1000.0, 1), attach(1000.0, pid, "node")];
    for s in 1..=seconds {
        let ts = 1000.0 + f64::from(s);
        let heap = (20 + u64::from(s)) * MIB;
        out.push(gc(ts - 0.5, pid, s % 10 == 0, 2_000_000, heap + 8 * MIB, heap));
        out.push(snapshot(
            ts,
            pid,
            "node",
            (100 + u64::from(s)) * MIB,
            u64::from(s) * 2_000_000,
            leak(MIB as f64, 3600.0),
        ));
    }
    out
}
