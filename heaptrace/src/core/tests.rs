//! Model-level tests: inputs built by hand, records checked exactly.

use super::{
    input::*,
    record::*,
    sites::{Frame, FrameKind},
    *,
};

const K: u64 = 1024;
const M: u64 = 1024 * 1024;
const SEC: u64 = 1_000_000_000;
const RW: u32 = 3;
const ANON_PRIVATE: u32 = 0x22;

fn model() -> Model {
    Model::new(ModelConfig {
        page_size: 4096,
        large_threshold: M,
        wall_offset_ns: 0,
        mem_hook: MemHook::BtfTracepoint,
        group_all: false,
    })
}

fn status(rss_anon: u64) -> ProcStatus {
    ProcStatus { vm_size: 100 * M, rss_anon, rss_file: 10 * M, rss_shmem: 0 }
}

fn attach(m: &mut Model, pid: u32) {
    let info = ProcessInfo {
        pid,
        comm: "worker".into(),
        ts_ns: SEC,
        start_brk: 0x55_0000_0000,
        brk: 0x55_0000_0000 + 132 * K,
        mappings: vec![
            Mapping { start: 0x7f00_0000_0000, end: 0x7f00_0010_0000, prot: 5, shared: false, file: true },
            Mapping { start: 0x7f10_0000_0000, end: 0x7f10_0020_0000, prot: 0, shared: false, file: false },
        ],
        status: status(20 * M),
        cgroup_path: None,
        ns_pid: Some(pid),
        ..Default::default()
    };
    m.apply(Input::Attach(Box::new(info)), &mut Vec::new());
}

fn mem(pid: u32, ts_ns: u64, op: MemOp) -> Input {
    Input::Event(Event { pid, tid: pid, ts_ns, cgroup_id: 77, kind: EventKind::Mem { op, stack: None } })
}

fn snapshot(m: &mut Model, pid: u32, ts_ns: u64) -> Snapshot {
    let mut out = Vec::new();
    m.snapshots(ts_ns, &mut out);
    out.into_iter()
        .find_map(|r| match r {
            Record::Snapshot(s) if s.pid == pid => Some(s),
            _ => None,
        })
        .expect("a snapshot for the pid")
}

#[test]
fn baseline_is_counted_from_the_first_snapshot() {
    let mut m = model();
    attach(&mut m, 10);
    let s = snapshot(&mut m, 10, 2 * SEC);
    assert_eq!(s.mapped_bytes, 3 * M);
    assert_eq!(s.mapped_file_bytes, M);
    assert_eq!(s.committed_bytes, M);
    assert_eq!(s.brk_bytes, 132 * K);
    assert_eq!((s.mapped_growth_bytes, s.committed_growth_bytes, s.brk_growth_bytes), (0, 0, 0));
    assert_eq!(s.rss_bytes, 30 * M);
}

#[test]
fn exact_growth_from_a_known_sequence() {
    let mut m = model();
    attach(&mut m, 10);
    let mut out = Vec::new();
    let base = 0x7e00_0000_0000u64;
    for (i, op) in [
        MemOp::Mmap { addr: base, len: 8 * M, prot: RW, flags: ANON_PRIVATE, fd: -1 },
        MemOp::Munmap { addr: base + M, len: 256 * K },
        MemOp::Mmap { addr: base + 16 * M, len: 4 * M, prot: 0, flags: ANON_PRIVATE, fd: -1 },
        MemOp::Mprotect { addr: base + 16 * M, len: M, prot: RW },
        MemOp::Mremap { old_addr: base, old_len: M, new_addr: base + 32 * M, new_len: 3 * M, flags: 1 },
        MemOp::Brk { brk: 0x55_0000_0000 + 132 * K + M },
        MemOp::Brk { brk: 0x55_0000_0000 + 132 * K + 768 * K },
    ]
    .into_iter()
    .enumerate()
    {
        m.apply(mem(10, SEC + i as u64, op), &mut out);
    }
    let s = snapshot(&mut m, 10, 2 * SEC);
    assert_eq!(s.mapped_growth_bytes, (8 * M - 256 * K + 4 * M + 2 * M) as i64);
    assert_eq!(s.committed_growth_bytes, (8 * M - 256 * K + M + 2 * M) as i64);
    assert_eq!(s.brk_growth_bytes, 768 * K as i64);
    assert_eq!(s.cgroup_id, 77);
    // Large mappings: the 8 MiB and 4 MiB mmaps and the 3 MiB mremap.
    let large: Vec<_> = out
        .iter()
        .filter_map(|r| match r {
            Record::Mapping(l) => Some((l.op, l.len)),
            _ => None,
        })
        .collect();
    assert_eq!(large, vec![(MappingOp::Mmap, 8 * M), (MappingOp::Mmap, 4 * M), (MappingOp::Mremap, 3 * M)]);
}

#[test]
fn samples_drive_rss_and_call_counts() {
    let mut m = model();
    attach(&mut m, 10);
    let calls = CallCounts { mmap: 5, munmap: 3, ..Default::default() };
    m.apply(
        Input::Sample(Sample { pid: 10, ts_ns: 3 * SEC, status: Some(status(40 * M)), calls, gc_work: None }),
        &mut Vec::new(),
    );
    let s = snapshot(&mut m, 10, 3 * SEC);
    assert_eq!((s.calls.mmap, s.calls.munmap), (5, 3));
    assert_eq!(s.rss_growth_bytes, (20 * M) as i64);
    assert_eq!(s.rss_growth_bytes_per_s, (10 * M) as f64);
    // A sample without status (process gone) keeps the last good figures.
    m.apply(
        Input::Sample(Sample { pid: 10, ts_ns: 4 * SEC, status: None, calls, gc_work: None }),
        &mut Vec::new(),
    );
    assert_eq!(snapshot(&mut m, 10, 4 * SEC).rss_bytes, 50 * M);
}

#[test]
fn two_processes_are_kept_apart() {
    let mut m = model();
    attach(&mut m, 10);
    attach(&mut m, 20);
    m.apply(
        mem(20, SEC, MemOp::Mmap { addr: 0x1000_0000, len: 2 * M, prot: RW, flags: ANON_PRIVATE, fd: -1 }),
        &mut Vec::new(),
    );
    // A process that was never attached is ignored.
    m.apply(
        mem(30, SEC, MemOp::Mmap { addr: 0x1000_0000, len: 2 * M, prot: RW, flags: ANON_PRIVATE, fd: -1 }),
        &mut Vec::new(),
    );
    assert_eq!(snapshot(&mut m, 10, 2 * SEC).mapped_growth_bytes, 0);
    assert_eq!(snapshot(&mut m, 20, 2 * SEC).mapped_growth_bytes, (2 * M) as i64);
    let mut out = Vec::new();
    m.snapshots(2 * SEC, &mut out);
    assert_eq!(out.len(), 2);
}

#[test]
fn exit_and_oom_are_reported_once_and_stop_snapshots() {
    let mut m = model();
    attach(&mut m, 10);
    let mut out = Vec::new();
    let oom = EventKind::OomVictim { anon_rss: 90 * M, file_rss: M, shmem_rss: 0, total_vm: 200 * M };
    m.apply(Input::Event(Event { pid: 10, tid: 10, ts_ns: 2 * SEC, cgroup_id: 0, kind: oom }), &mut out);
    for _ in 0..2 {
        m.apply(
            Input::Event(Event { pid: 10, tid: 10, ts_ns: 3 * SEC, cgroup_id: 0, kind: exit() }),
            &mut out,
        );
    }
    assert!(matches!(&out[0], Record::Oom(o) if o.anon_rss_bytes == 90 * M && o.source == OomSource::Kernel));
    // The death, with the kernel's figures at the kill, then the exit.
    let Record::Death(d) = &out[1] else { panic!("death: {:?}", out[1]) };
    assert_eq!(d.cause, crate::core::record::DeathCause::OomKill);
    assert_eq!(d.signal.as_deref(), Some("SIGKILL"));
    assert_eq!(d.memory.rss_anon_bytes, 90 * M);
    assert_eq!(d.memory.source, crate::core::record::MemorySource::Kernel);
    assert!(matches!(&out[2], Record::Exit(e) if e.oom_killed && e.traced_s == 2.0));
    assert_eq!(out.len(), 3);
    assert!(m.live_pids().is_empty());
    let mut snaps = Vec::new();
    m.snapshots(4 * SEC, &mut snaps);
    assert!(snaps.is_empty());
    let Record::Summary(summary) = m.summary(5 * SEC) else { panic!("summary") };
    assert!(summary.processes[0].exited && summary.processes[0].oom_killed);
    assert!(summary.processes[0].finding.contains("OOM killer"));
}

#[test]
fn drops_are_reported_as_increments() {
    let mut m = model();
    let mut out = Vec::new();
    m.apply(Input::Drops { ts_ns: SEC, kernel: 0, undecodable: 0 }, &mut out);
    m.apply(Input::Drops { ts_ns: 2 * SEC, kernel: 5, undecodable: 0 }, &mut out);
    m.apply(Input::Drops { ts_ns: 3 * SEC, kernel: 7, undecodable: 1 }, &mut out);
    let drops: Vec<_> = out
        .iter()
        .map(|r| match r {
            Record::Dropped(d) => (d.count, d.total, d.reason),
            _ => panic!("only dropped records"),
        })
        .collect();
    assert_eq!(
        drops,
        vec![
            (5, 5, DropReason::RingBufferFull),
            (2, 8, DropReason::RingBufferFull),
            (1, 8, DropReason::Undecodable)
        ]
    );
    let Record::Summary(s) = m.summary(4 * SEC) else { panic!() };
    assert_eq!(s.dropped_events, 8);
}

#[test]
fn summary_attributes_growth_to_v8_sized_chunks() {
    let mut m = model();
    attach(&mut m, 10);
    let mut out = Vec::new();
    // 400 V8-style pages: reserve 508 KiB, trim 252 KiB, commit 256 KiB.
    for i in 0..400u64 {
        let a = 0x6000_0000_0000 + i * M;
        m.apply(
            mem(10, SEC, MemOp::Mmap { addr: a, len: 508 * K, prot: 0, flags: ANON_PRIVATE, fd: -1 }),
            &mut out,
        );
        m.apply(mem(10, SEC, MemOp::Munmap { addr: a + 256 * K, len: 252 * K }), &mut out);
        m.apply(mem(10, SEC, MemOp::Mprotect { addr: a, len: 256 * K, prot: RW }), &mut out);
    }
    m.apply(
        Input::Sample(Sample {
            pid: 10,
            ts_ns: 11 * SEC,
            status: Some(status(120 * M)),
            calls: CallCounts::default(),
            gc_work: None,
        }),
        &mut out,
    );
    let Record::Summary(s) = m.summary(11 * SEC) else { panic!() };
    let p = &s.processes[0];
    assert_eq!(p.committed_growth_bytes, (100 * M) as i64);
    assert_eq!(p.growth_by_chunk_size[0].chunk_size_bytes, 256 * K);
    assert_eq!(p.growth_by_chunk_size[0].chunks_delta, 400);
    assert_eq!(
        p.finding,
        "RSS grew 100.0 MiB in 10 s (+10.0 MiB/s): anon +100.0 MiB, file +0 B, shmem +0 B. \
         Committed anonymous mmap memory +100.0 MiB, mostly in 256 KiB chunks (+400 chunks)."
    );
}

#[test]
fn summary_says_when_rss_grows_without_new_mappings() {
    let mut m = model();
    attach(&mut m, 10);
    m.apply(
        Input::Sample(Sample {
            pid: 10,
            ts_ns: 3 * SEC,
            status: Some(status(60 * M)),
            calls: CallCounts::default(),
            gc_work: None,
        }),
        &mut Vec::new(),
    );
    let Record::Summary(s) = m.summary(3 * SEC) else { panic!() };
    assert!(s.processes[0].finding.contains("already mapped"), "{}", s.processes[0].finding);
}

#[test]
fn inputs_round_trip_through_json_for_recordings() {
    let input = mem(1, 2, MemOp::Mremap { old_addr: 1, old_len: 2, new_addr: 3, new_len: 4, flags: 1 });
    let text = serde_json::to_string(&input).unwrap();
    assert_eq!(serde_json::from_str::<Input>(&text).unwrap(), input);
    // A named stack travels with its frames, so a replay needs no binaries.
    let frames = vec![Frame::unnamed_js(), Frame { build_id: Some("ab12".into()), ..Frame::unknown() }];
    let input = Input::Stack { pid: 1, id: 9, frames };
    let text = serde_json::to_string(&input).unwrap();
    assert_eq!(serde_json::from_str::<Input>(&text).unwrap(), input);
}

#[test]
fn a_process_in_a_pod_is_labelled_with_its_container() {
    let mut m = model();
    let id = "3f4e1d2c9b8a7f6e5d4c3b2a19081726354453627181920a1b2c3d4e5f607182";
    let path = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f4a8c2e_1b3d_4e5f_8a9b_0c1d2e3f4a5b.slice/cri-containerd-{id}.scope"
    );
    let info = ProcessInfo {
        pid: 7,
        comm: "node".into(),
        ts_ns: SEC,
        start_brk: 0,
        brk: 0,
        mappings: vec![],
        status: status(M),
        cgroup_path: Some(path),
        ns_pid: Some(1),
        ..Default::default()
    };
    m.apply(Input::Attach(Box::new(info)), &mut Vec::new());
    let s = snapshot(&mut m, 7, 2 * SEC);
    let c = s.container.expect("a container");
    assert_eq!(
        (c.container_id.as_str(), c.pod_uid.as_deref()),
        (id, Some("0f4a8c2e-1b3d-4e5f-8a9b-0c1d2e3f4a5b"))
    );
    assert_eq!(s.ns_pid, Some(1));
    let json = serde_json::to_value(Record::Snapshot(snapshot(&mut m, 7, 3 * SEC))).unwrap();
    assert_eq!(json["runtime"], "containerd");
    assert_eq!(json["qos"], "burstable");
}

fn exit() -> EventKind {
    EventKind::Exit { calls: CallCounts::default(), gc_work: GcWork::default(), exit_code: None }
}

fn in_cgroup(m: &mut Model, pid: u32, path: &str, cgroup_id: u64, ts_ns: u64) {
    let info = ProcessInfo {
        pid,
        comm: "node".into(),
        ts_ns,
        status: status(10 * M),
        cgroup_path: Some(path.into()),
        cgroup_id,
        ..Default::default()
    };
    m.apply(Input::Attach(Box::new(info)), &mut Vec::new());
}

fn gc(pid: u32, ts_ns: u64, collector: u32, pause_ns: u64) -> Input {
    let pause = GcPause {
        pause_ns,
        heap_before: 20 * M,
        heap_after: 12 * M,
        collector: Some(collector),
        reason: Some(1),
        v8_timestamps: true,
        marking_steps: 0,
        marking_step_ns: 0,
        marking_start_ns: 0,
        heap: 0,
    };
    Input::Event(Event { pid, tid: pid, ts_ns, cgroup_id: 0, kind: EventKind::Gc(pause) })
}

#[test]
fn churn_leaves_bounded_state_and_exact_counts() {
    let mut m = model();
    for i in 0..1000u32 {
        let pid = 1000 + i;
        in_cgroup(&mut m, pid, &format!("/svc/job-{}", i % 300), 10 + u64::from(i % 300), SEC + u64::from(i));
        m.apply(gc(pid, SEC + u64::from(i), 0, 100_000), &mut Vec::new());
        let mut out = Vec::new();
        m.apply(
            Input::Event(Event { pid, tid: pid, ts_ns: 2 * SEC + u64::from(i), cgroup_id: 0, kind: exit() }),
            &mut out,
        );
        assert!(matches!(&out[..], [Record::Exit(e)] if e.pid == pid));
    }
    let size = m.size();
    assert_eq!(size.live_processes, 0);
    assert_eq!(size.retired_kept, model::RETIRED_KEPT);
    assert!(size.groups <= model::IDLE_GROUPS_KEPT, "{size:?}");
    let Record::Summary(s) = m.summary(10 * SEC) else { panic!() };
    assert_eq!(s.exited_processes, 1000);
    assert_eq!(s.processes_not_listed, 1000 - model::RETIRED_KEPT as u64);
    assert_eq!(s.processes.len(), model::RETIRED_KEPT);
    // The latest are the ones kept.
    assert_eq!(s.processes.last().unwrap().pid, 1999);
}

#[test]
fn a_pid_attached_again_replaces_its_old_image() {
    let mut m = model();
    attach(&mut m, 10);
    let mut out = Vec::new();
    let info = ProcessInfo {
        pid: 10,
        comm: "node".into(),
        ts_ns: 2 * SEC,
        origin: Origin::Exec,
        ..Default::default()
    };
    m.apply(Input::Attach(Box::new(info)), &mut out);
    assert!(matches!(&out[..], [Record::Attach(a)] if a.origin == Origin::Exec && a.comm == "node"));
    let Record::Summary(s) = m.summary(3 * SEC) else { panic!() };
    assert_eq!(s.processes.len(), 2);
    assert!(s.processes[0].replaced_by_exec && s.processes[0].comm == "worker");
    assert!(!s.processes[1].exited && s.processes[1].comm == "node");
    // An exec out of the selection ends it without an exit.
    let exec = EventKind::Exec { comm: "sh".into(), traced: false, was_traced: true, undecided: false };
    m.apply(Input::Event(Event { pid: 10, tid: 10, ts_ns: 4 * SEC, cgroup_id: 0, kind: exec }), &mut out);
    assert!(!m.any_live());
}

#[test]
fn groups_aggregate_their_processes_gc_and_cgroup_memory() {
    let mut m = model();
    let pod_a = "/kubepods/burstable/pod0f4a8c2e-1b3d-4e5f-8a9b-0c1d2e3f4a5b/3f4e1d2c9b8a7f6e5d4c3b2a19081726354453627181920a1b2c3d4e5f607182";
    let pod_b = "/kubepods/besteffort/pod1f4a8c2e-1b3d-4e5f-8a9b-0c1d2e3f4a5b/4f4e1d2c9b8a7f6e5d4c3b2a19081726354453627181920a1b2c3d4e5f607182";
    in_cgroup(&mut m, 1, pod_a, 101, SEC);
    in_cgroup(&mut m, 2, pod_a, 101, SEC);
    in_cgroup(&mut m, 3, pod_b, 202, SEC);
    let mut out = Vec::new();
    for (pid, n) in [(1, 3), (2, 2), (3, 7)] {
        for i in 0..n {
            m.apply(gc(pid, SEC + i, if i == 0 { 1 } else { 0 }, 1_000_000), &mut out);
        }
    }
    let cg = |path: &str, usage, limit| {
        Input::Cgroup(CgroupSample {
            ts_ns: 2 * SEC,
            cgroup_path: path.into(),
            usage_bytes: usage,
            limit_bytes: limit,
            source: CgroupVersion::V1,
        })
    };
    m.apply(cg(pod_a, 100 * M, Some(256 * M)), &mut out);
    m.apply(cg(pod_a, 120 * M, Some(256 * M)), &mut out);
    m.apply(cg(pod_b, 50 * M, None), &mut out);
    let mut snaps = Vec::new();
    m.snapshots(3 * SEC, &mut snaps);
    let groups: Vec<&GroupSnapshot> =
        snaps.iter().filter_map(|r| if let Record::Group(c) = r { Some(c) } else { None }).collect();
    assert_eq!(groups.len(), 2);
    let a = groups.iter().find(|g| g.cgroup_id == 101).unwrap();
    assert_eq!((a.processes, a.gc_count, a.gc_pause_ns), (2, 5, 5_000_000));
    assert_eq!(a.memory_usage_bytes, Some(120 * M));
    assert_eq!(a.memory_usage_growth_bytes, Some((20 * M) as i64));
    assert_eq!((a.memory_limit_bytes, a.memory_headroom_bytes), (Some(256 * M), Some(136 * M)));
    assert_eq!(
        a.container.as_ref().unwrap().pod_uid.as_deref(),
        Some("0f4a8c2e-1b3d-4e5f-8a9b-0c1d2e3f4a5b")
    );
    let b = groups.iter().find(|g| g.cgroup_id == 202).unwrap();
    assert_eq!((b.processes, b.gc_count, b.memory_limit_bytes, b.memory_headroom_bytes), (1, 7, None, None));
    // Each group's record comes right before its processes' snapshots.
    let kinds: Vec<&str> = snaps
        .iter()
        .map(|r| match r {
            Record::Group(_) => "group",
            Record::Snapshot(_) => "process",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["group", "process", "group", "process", "process"]); // groups by path
    let Record::Summary(s) = m.summary(4 * SEC) else { panic!() };
    let a = s.groups.iter().find(|c| c.snapshot.cgroup_id == 101).unwrap();
    assert_eq!((a.major.count, a.minor.count), (2, 3));
}

/// A V8 process whose floor rises 12 MiB a minute, then dies of V8's OOM.
#[test]
fn a_rising_floor_becomes_a_leak_verdict_and_a_death_is_explained_with_the_kernels_figures() {
    let mut m = model();
    let mut info =
        ProcessInfo { pid: 10, comm: "node".into(), ts_ns: SEC, gc_probes: true, ..Default::default() };
    info.status = status(50 * M);
    m.apply(Input::Attach(Box::new(info)), &mut Vec::new());
    let limit = Input::HeapLimit { pid: 10, ts_ns: SEC, bytes: 144 * M, old_generation_bytes: Some(96 * M) };
    m.apply(limit, &mut Vec::new());
    // The floor's growth is allocated by one JS function: large objects,
    // each mapped on its own on V8's 256 KiB alignment.
    let leaky = vec![
        Frame { function: "mmap64".into(), ..Frame::unknown() },
        Frame {
            function: "leakyHandler".into(),
            file: Some("/srv/app.js".into()),
            line: Some(7),
            kind: FrameKind::Js,
            build_id: None,
        },
    ];
    m.apply(Input::Stack { pid: 10, id: 77, frames: leaky }, &mut Vec::new());
    let mut out = Vec::new();
    for s in 1..=60u64 {
        let ts_ns = SEC + s * SEC;
        let large = MemOp::Mmap { addr: 0x4000_0000 + s * 4 * M, len: M / 5, prot: 3, flags: 0x22, fd: -1 };
        let event = Event {
            pid: 10,
            tid: 10,
            ts_ns,
            cgroup_id: 0,
            kind: EventKind::Mem { op: large, stack: Some(77) },
        };
        m.apply(Input::Event(event), &mut out);
        if s % 10 == 0 {
            let floor = 20 * M + s * 12 * M / 60;
            let pause = GcPause {
                pause_ns: 5_000_000,
                heap_before: floor + 20 * M,
                heap_after: floor,
                collector: Some(1),
                reason: Some(1),
                v8_timestamps: true,
                marking_steps: 0,
                marking_step_ns: 0,
                marking_start_ns: 0,
                heap: 0x1000,
            };
            let event = Event { pid: 10, tid: 10, ts_ns, cgroup_id: 0, kind: EventKind::Gc(pause) };
            m.apply(Input::Event(event), &mut out);
        }
        let sample = Sample {
            pid: 10,
            ts_ns,
            status: Some(status(50 * M)),
            calls: CallCounts::default(),
            gc_work: None,
        };
        m.apply(Input::Sample(sample), &mut out);
    }
    let leak = out
        .iter()
        .find_map(|r| match r {
            Record::Verdict(v) if v.verdict.state == VerdictState::Leak => Some(v),
            _ => None,
        })
        .expect("a leak verdict");
    assert_eq!((leak.pid, leak.verdict.memory), (Some(10), Some(MemoryKind::JsHeap)));
    // Against the old generation's limit, not heap_size_limit.
    assert_eq!((leak.verdict.limit, leak.verdict.limit_bytes), (Some(LimitKind::V8Heap), Some(96 * M)));
    // The one site that grew is named.
    let site = leak.verdict.site.as_ref().expect("the site that took the growth");
    assert_eq!((site.frame.function.as_str(), site.share), ("leakyHandler", 1.0));
    assert!(
        leak.verdict.evidence.ends_with("; 100 % of the growth allocated in leakyHandler (app.js:7)"),
        "{}",
        leak.verdict.evidence
    );

    // `--on-leak`'s report: written out, and kept for the death record.
    let heap = crate::heap::HeapReport { pid: 10, mode: crate::heap::HeapMode::Diff, ..Default::default() };
    let mut out = Vec::new();
    m.apply(Input::Heap(Box::new(heap.clone())), &mut out);
    assert_eq!(out, vec![Record::Heap(heap.clone())]);

    let mut out = Vec::new();
    let at_abort = ProcStatus { vm_size: 900 * M, rss_anon: 130 * M, rss_file: 40 * M, rss_shmem: 0 };
    let oom = EventKind::V8OutOfMemory { memory: Some(at_abort) };
    m.apply(Input::Event(Event { pid: 10, tid: 10, ts_ns: 70 * SEC, cgroup_id: 0, kind: oom }), &mut out);
    let exit =
        EventKind::Exit { calls: CallCounts::default(), gc_work: GcWork::default(), exit_code: Some(0x86) };
    m.apply(Input::Event(Event { pid: 10, tid: 10, ts_ns: 71 * SEC, cgroup_id: 0, kind: exit }), &mut out);
    assert!(matches!(&out[0], Record::Oom(o) if o.anon_rss_bytes == 130 * M && o.source == OomSource::V8));
    let Record::Death(d) = &out[1] else { panic!("a death: {out:?}") };
    assert_eq!((d.cause, d.signal.as_deref()), (DeathCause::V8Oom, Some("SIGABRT")));
    assert_eq!((d.memory.source, d.memory.rss_anon_bytes), (MemorySource::Kernel, 130 * M));
    assert_eq!(d.memory.v8_old_generation_limit_bytes, Some(96 * M));
    assert_eq!(d.verdict.as_ref().map(|v| v.state), Some(VerdictState::Leak));
    assert_eq!(d.allocation_sites[0].headline(), "leakyHandler (app.js:7)");
    assert_eq!(d.allocation_sites[0].live_v8_bytes, 60 * (M / 5));
    assert_eq!(d.heap.as_deref(), Some(&heap));
    let flight = d.flight.as_ref().expect("its flight recording");
    assert_eq!((flight.gcs.len(), flight.memory.len()), (6, 60));
    assert!(matches!(&out[2], Record::Exit(_)));
    let Record::Summary(s) = m.summary(72 * SEC) else { panic!() };
    assert!(
        s.processes[0].answer.contains("leaks memory in its JavaScript heap"),
        "{}",
        s.processes[0].answer
    );
    assert!(s.processes[0].answer.contains("It died: V8 ran out of JS heap"), "{}", s.processes[0].answer);
    assert!(
        s.processes[0]
            .answer
            .contains("Most of the growth (100 %) was allocated in leakyHandler (app.js:7)."),
        "{}",
        s.processes[0].answer
    );
}
