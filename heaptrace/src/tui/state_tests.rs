use super::*;
use crate::tui::fixtures::*;

fn state_of(records: &[Record]) -> ViewState {
    let mut s = ViewState::default();
    records.iter().for_each(|r| s.apply(r));
    s
}

#[test]
fn snapshots_and_gcs_fill_a_process() {
    let s = state_of(&leaking_run(42, 30));
    let p = &s.processes[&42];
    assert_eq!(p.comm, "node");
    assert_eq!(p.points.len(), 30);
    assert_eq!(p.last.unwrap().rss, 130 * MIB);
    assert_eq!(p.gcs.len(), 30);
    assert_eq!(p.heap.iter().filter(|h| h.major).count(), 3);
    // 2 ms per second of wall time: 0.2 %.
    let share = p.gc_share().unwrap();
    assert!((share - 0.002).abs() < 1e-9, "{share}");
    let p99 = p.pause_p99_ms().unwrap();
    assert!((p99 - 2.0).abs() < 0.05, "{p99}");
    // native is rss/8: from 101/8 MiB to 130/8 MiB.
    assert_eq!(p.native_growth(), Some((130 * MIB / 8) as i64 - (101 * MIB / 8) as i64));
    assert_eq!(p.verdict.as_ref().unwrap().state, crate::core::record::VerdictState::Leak);
    assert_eq!(s.started.as_ref().unwrap().selection, "--pid 42");
    assert_eq!(s.first_ts, Some(1000.0));
    assert_eq!(s.last_ts, 1030.0);
}

#[test]
fn rings_stay_bounded() {
    let s = state_of(&leaking_run(42, 1500));
    let p = &s.processes[&42];
    assert!(p.points.len() <= MAX_POINTS);
    // Ten minutes of one-second snapshots.
    assert_eq!(p.points.len(), 601);
    assert_eq!(p.points.front().unwrap().ts, 1900.0);
    assert_eq!(p.gcs.len(), GCS_KEPT);
    assert!(p.heap.len() <= HEAP_POINTS);
    assert_eq!(p.pauses.len(), 1500);
}

#[test]
fn exited_processes_beyond_a_few_are_let_go() {
    let mut s = ViewState::default();
    for pid in 1..=(EXITED_KEPT as u32 + 10) {
        s.apply(&snapshot(f64::from(pid), pid, "node", MIB, 0, Verdict::unknown("")));
        s.apply(&exit(f64::from(pid) + 0.5, pid, "node"));
    }
    s.apply(&snapshot(100.0, 999, "node", MIB, 0, Verdict::unknown("")));
    assert_eq!(s.processes.len(), EXITED_KEPT + 1);
    assert!(!s.processes.contains_key(&1), "the oldest exited process is let go");
    assert_eq!(s.processes[&42].ended.as_ref().unwrap().1, "exited");
}

#[test]
fn a_death_brings_its_sites_and_explanation() {
    let mut records = leaking_run(42, 5);
    records.push(death(1006.0, 42, "node", vec![site("handleRequest", 17, 8 * MIB), site("other", 3, MIB)]));
    let s = state_of(&records);
    let p = &s.processes[&42];
    assert_eq!(p.ended.as_ref().unwrap().1, "died (v8-oom, SIGABRT)");
    assert_eq!(p.sites.len(), 2);
    assert!(p.sites[0].headline.contains("handleRequest"), "{}", p.sites[0].headline);
    assert_eq!(p.answer.as_deref(), Some("V8 ran out of heap after its floor rose"));
}

#[test]
fn rows_carry_processes_and_groups() {
    let mut records = leaking_run(42, 10);
    records.push(group(1011.0, "/system.slice/api.service", 200 * MIB));
    let s = state_of(&records);
    let mut rows = Vec::new();
    s.rows(&mut rows);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].key, RowKey::Group(9));
    assert_eq!(rows[0].name, "cgroup /system.slice/api.service");
    assert_eq!(rows[1].pid, Some(42));
    assert_eq!(rows[1].rss, 110 * MIB);
    assert_eq!(rows[1].heap_after_major, Some(110 * MIB / 4));
    assert_eq!(rows[1].time_to_limit_s, Some(3600.0));
}

#[test]
fn stats_give_events_per_second() {
    let mut s = ViewState::default();
    let stats = |now_ns, events| CollectorStats { now_ns, events, ..Default::default() };
    s.apply_stats(&stats(1_000_000_000, 100));
    assert_eq!(s.stats.events_per_s, 0.0);
    s.apply_stats(&stats(3_000_000_000, 700));
    assert_eq!(s.stats.events_per_s, 300.0);
    assert_eq!(s.stats.events, 700);
}

#[test]
fn the_summary_ends_the_run() {
    let mut records = leaking_run(42, 3);
    records.push(summary(1004.0));
    let s = state_of(&records);
    assert!(s.finished);
}
