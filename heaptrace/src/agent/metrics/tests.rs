//! Metrics from hand-built records: names, labels, values, and series that
//! come and go.

use super::*;
use crate::core::{
    container::{ContainerRef, Runtime},
    gc::GcKind,
    input::Origin,
    record::{Attached, Exit, Gc, ModelSize},
};

pub(super) const SEC: u64 = 1_000_000_000;
pub(super) const ID: &str = "3f4e1d2c9b8a7f6e5d4c3b2a19081726354453627181920a1b2c3d4e5f607182";

pub(super) fn sink(per_process: bool) -> MetricsSink {
    MetricsSink::new(MetricsConfig {
        node: "node-1".into(),
        per_process,
        grace_ns: 10 * SEC,
        prefix: "heaptrace".into(),
    })
}

pub(super) fn container() -> ContainerRef {
    ContainerRef {
        runtime: Runtime::Containerd,
        container_id: ID.into(),
        pod_uid: Some("0f4a8c2e-1b3d-4e5f-8a9b-0c1d2e3f4a5b".into()),
        qos: Some("burstable".into()),
        namespace: Some("shop".into()),
        pod: Some("api-1".into()),
        container: Some("server".into()),
    }
}

pub(super) fn attach(m: &mut MetricsSink, pid: u32) {
    let a = Attached {
        ts: 0.0,
        pid,
        comm: "node".into(),
        origin: Origin::Start,
        gc_probes: true,
        cgroup_id: 5,
        container: Some(container()),
        ns_pid: Some(1),
    };
    m.record(&Record::Attach(a)).unwrap();
}

pub(super) fn snapshot(pid: u32, rss_anon: u64, steps: u64, step_ns: u64) -> Snapshot {
    Snapshot {
        ts: 1.0,
        rss_bytes: rss_anon,
        rss_anon_bytes: rss_anon,
        mapped_bytes: 100,
        mapped_anon_bytes: 100,
        committed_bytes: 50,
        brk_bytes: 10,
        rss_growth_bytes_per_s: 2.5,
        cgroup_id: 5,
        container: Some(container()),
        ns_pid: Some(1),
        marking_steps: steps,
        marking_step_ns: step_ns,
        heap_after_last_major_bytes: Some(7 << 20),
        v8_heap_limit_bytes: Some(512 << 20),
        v8_old_generation_limit_bytes: Some(464 << 20),
        ..Snapshot::blank(pid, "node")
    }
}

pub(super) fn gc(pid: u32, kind: GcKind, pause_ns: u64) -> Record {
    Record::Gc(Gc {
        ts: 1.0,
        pid,
        tid: pid,
        kind,
        collector: "Scavenge",
        reason: "allocation failure",
        pause_ns,
        heap_before_bytes: 10 << 20,
        heap_after_bytes: 6 << 20,
        marking_steps: 0,
        marking_step_ns: 0,
        marking_start_ns: 0,
        cgroup_id: 5,
        container: Some(container()),
    })
}

pub(super) fn tick(m: &mut MetricsSink, now_ns: u64, live: usize) {
    let stats = CollectorStats {
        now_ns,
        events: 10,
        dropped: 0,
        probe_attach_failures: 0,
        model: ModelSize { live_processes: live, retired_kept: 0, groups: 1 },
    };
    m.tick(&stats);
}

/// The value of the one line that starts with `series` (name and labels).
pub(super) fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

pub(super) const GROUP: &str = r#"namespace="shop",pod="api-1",container="server",container_id="3f4e1d2c9b8a7f6e5d4c3b2a19081726354453627181920a1b2c3d4e5f607182",pod_uid="0f4a8c2e-1b3d-4e5f-8a9b-0c1d2e3f4a5b",node="node-1""#;

#[test]
fn gc_pauses_and_memory_per_container_with_cadvisor_labels() {
    let mut m = sink(false);
    attach(&mut m, 10);
    attach(&mut m, 11);
    for (pid, kind, ns) in
        [(10, GcKind::Minor, 400_000), (10, GcKind::Minor, 2_000_000), (11, GcKind::Major, 30_000_000)]
    {
        m.record(&gc(pid, kind, ns)).unwrap();
    }
    m.record(&Record::Snapshot(snapshot(10, 100 << 20, 0, 0))).unwrap();
    m.record(&Record::Snapshot(snapshot(11, 50 << 20, 0, 0))).unwrap();
    tick(&mut m, SEC, 2);
    // Ten marking steps of 0.3 ms in the next interval.
    m.record(&Record::Snapshot(snapshot(10, 100 << 20, 10, 3_000_000))).unwrap();
    tick(&mut m, 2 * SEC, 2);
    let text = m.encode();

    let h = |suffix: &str| format!("heaptrace_nodejs_gc_duration_seconds_{suffix}");
    assert_eq!(value(&text, &format!("{}{{{GROUP},kind=\"minor\"}}", h("count"))), Some(2.0), "{text}");
    assert_eq!(value(&text, &format!("{}{{le=\"0.0005\",{GROUP},kind=\"minor\"}}", h("bucket"))), Some(1.0));
    assert_eq!(value(&text, &format!("{}{{le=\"0.0025\",{GROUP},kind=\"minor\"}}", h("bucket"))), Some(2.0));
    assert_eq!(value(&text, &format!("{}{{{GROUP},kind=\"major\"}}", h("count"))), Some(1.0));
    assert_eq!(value(&text, &format!("{}{{{GROUP},kind=\"incremental\"}}", h("count"))), Some(10.0));
    assert_eq!(
        value(&text, &format!("{}{{le=\"0.0005\",{GROUP},kind=\"incremental\"}}", h("bucket"))),
        Some(10.0)
    );
    assert_eq!(
        value(&text, &format!("heaptrace_nodejs_gc_reclaimed_bytes_total{{{GROUP},kind=\"minor\"}}")),
        Some((8 << 20) as f64)
    );
    // Summed over the container's two processes.
    assert_eq!(
        value(&text, &format!("heaptrace_process_resident_memory_bytes{{{GROUP},type=\"anon\"}}")),
        Some((150 << 20) as f64)
    );
    assert_eq!(value(&text, &format!("heaptrace_traced_processes{{{GROUP}}}")), Some(2.0));
    assert_eq!(
        value(&text, &format!("heaptrace_process_resident_memory_growth_bytes_per_second{{{GROUP}}}")),
        Some(5.0)
    );
    assert_eq!(
        value(&text, &format!("heaptrace_nodejs_heap_size_limit_bytes{{{GROUP}}}")),
        Some((1024 << 20) as f64)
    );
    assert_eq!(value(&text, "heaptrace_events_total"), Some(10.0));
    assert!(text.contains("# TYPE heaptrace_nodejs_gc_duration_seconds histogram"));
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn per_process_series_carry_pid_and_comm() {
    let mut m = sink(true);
    attach(&mut m, 10);
    m.record(&gc(10, GcKind::Minor, 400_000)).unwrap();
    tick(&mut m, SEC, 1);
    let text = m.encode();
    assert!(
        text.contains(&format!(
            "heaptrace_nodejs_gc_duration_seconds_count{{{GROUP},pid=\"10\",comm=\"node\",kind=\"minor\"}} 1"
        )),
        "{text}"
    );
}

#[test]
fn gauges_go_with_the_process_and_counters_after_the_grace_period() {
    let mut m = sink(false);
    attach(&mut m, 10);
    m.record(&gc(10, GcKind::Minor, 400_000)).unwrap();
    m.record(&Record::Snapshot(snapshot(10, 1 << 20, 0, 0))).unwrap();
    tick(&mut m, SEC, 1);
    assert!(m.encode().contains("heaptrace_process_resident_memory_bytes{"));
    let exit = Exit {
        ts: 2.0,
        pid: 10,
        comm: "node".into(),
        oom_killed: false,
        traced_s: 1.0,
        cgroup_id: 5,
        container: None,
    };
    m.record(&Record::Exit(exit)).unwrap();
    tick(&mut m, 2 * SEC, 0);
    let text = m.encode();
    assert!(!text.contains("heaptrace_process_resident_memory_bytes{"), "gauges stay after exit: {text}");
    assert!(
        text.contains("heaptrace_nodejs_gc_duration_seconds_count{"),
        "the histogram went before its grace"
    );
    tick(&mut m, 12 * SEC, 0);
    let text = m.encode();
    assert!(!text.contains("heaptrace_nodejs_gc_duration_seconds_count{"), "stale after grace: {text}");
    assert_eq!(m.series_sets(), 0);
}

#[test]
fn a_process_outside_containers_has_only_the_node_label() {
    let mut m = sink(false);
    let a = Attached {
        ts: 0.0,
        pid: 3,
        comm: "node".into(),
        origin: Origin::Exec,
        gc_probes: true,
        cgroup_id: 1,
        container: None,
        ns_pid: Some(3),
    };
    m.record(&Record::Attach(a)).unwrap();
    m.record(&gc(3, GcKind::Major, 1_000_000)).unwrap();
    tick(&mut m, SEC, 1);
    assert!(
        m.encode().contains("heaptrace_nodejs_gc_duration_seconds_count{node=\"node-1\",kind=\"major\"} 1")
    );
}

#[test]
fn pauses_before_the_first_interval_are_kept() {
    // Records come before the collector's first tick; the grace period
    // must count from that tick, not from time zero.
    let mut m = sink(false);
    attach(&mut m, 10);
    m.record(&gc(10, GcKind::Minor, 400_000)).unwrap();
    tick(&mut m, 1_000_000 * SEC, 1);
    assert!(
        m.encode()
            .contains(&format!("heaptrace_nodejs_gc_duration_seconds_count{{{GROUP},kind=\"minor\"}} 1"))
    );
}
