//! The verdict's series and the death counter, from hand-built records.

use super::{tests::*, *};
use crate::core::record::{
    Death, DeathCause, DeathMemory, Exit, LimitKind, MemoryKind, MemorySource, Verdict, VerdictState,
};

fn verdict(state: VerdictState, memory: Option<MemoryKind>, slope: Option<f64>, ttl: Option<f64>) -> Verdict {
    Verdict {
        state,
        memory,
        slope_bytes_per_s: slope,
        basis: None,
        time_to_limit_s: ttl,
        limit: ttl.map(|_| LimitKind::Cgroup),
        limit_bytes: ttl.map(|_| 96 << 20),
        evidence: String::new(),
        site: None,
    }
}

fn leak(ttl: Option<f64>) -> Verdict {
    verdict(VerdictState::Leak, Some(MemoryKind::JsHeap), Some(1500.0), ttl)
}

fn group(path: &str, ts: f64, container: Option<ContainerRef>, v: Verdict) -> Record {
    Record::Group(GroupSnapshot {
        ts,
        cgroup_path: path.into(),
        cgroup_id: 5,
        container,
        processes: 1,
        exited_processes: 0,
        rss_bytes: 0,
        rss_growth_bytes: 0,
        committed_growth_bytes: 0,
        memory_usage_bytes: None,
        memory_usage_growth_bytes: None,
        memory_limit_bytes: None,
        memory_headroom_bytes: None,
        memory_source: None,
        gc_count: 0,
        gc_pause_ns: 0,
        verdict: v,
    })
}

/// One interval: the group's record, its process's snapshot, the tick.
fn interval(m: &mut MetricsSink, n: u64, group_verdict: Verdict, process_verdict: Verdict) {
    m.record(&group("/pod/server", n as f64, Some(container()), group_verdict)).unwrap();
    let mut s = snapshot(10, 1 << 20, 0, 0);
    s.verdict = process_verdict;
    m.record(&Record::Snapshot(s)).unwrap();
    tick(m, n * SEC, 1);
}

fn lines<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

fn verdict_line(state: &str, memory: Option<&str>) -> String {
    let memory = memory.map(|m| format!(",memory=\"{m}\"")).unwrap_or_default();
    format!("heaptrace_memory_verdict{{{GROUP},state=\"{state}\"{memory}}}")
}

#[test]
fn the_verdict_is_a_state_set_with_one_current_pair() {
    let mut m = sink(false);
    attach(&mut m, 10);
    interval(&mut m, 1, Verdict::unknown("warming up"), Verdict::unknown(""));
    let text = m.encode();
    let set = lines(&text, "heaptrace_memory_verdict{");
    // unknown, and four states times three memories.
    assert_eq!(set.len(), 13, "{text}");
    assert_eq!(set.iter().filter(|l| l.ends_with(" 1")).count(), 1);
    assert_eq!(value(&text, &format!("{} ", verdict_line("unknown", None))), Some(1.0));
    assert_eq!(value(&text, &verdict_line("leak", Some("js-heap"))), Some(0.0));
    assert!(lines(&text, "heaptrace_memory_growth_bytes_per_second{").is_empty());
    assert!(lines(&text, "heaptrace_time_to_limit_seconds{").is_empty());

    // A leak with a forecast: the same 13 series, another one at 1.
    interval(&mut m, 2, leak(Some(1800.0)), Verdict::unknown(""));
    let text = m.encode();
    let set = lines(&text, "heaptrace_memory_verdict{");
    assert_eq!(set.len(), 13, "{text}");
    assert_eq!(set.iter().filter(|l| l.ends_with(" 1")).count(), 1);
    assert_eq!(value(&text, &verdict_line("leak", Some("js-heap"))), Some(1.0));
    assert_eq!(value(&text, &format!("{} ", verdict_line("unknown", None))), Some(0.0));
    assert_eq!(
        value(&text, &format!("heaptrace_memory_growth_bytes_per_second{{{GROUP},memory=\"js-heap\"}}")),
        Some(1500.0)
    );
    assert_eq!(
        value(&text, &format!("heaptrace_time_to_limit_seconds{{{GROUP},limit=\"cgroup\"}}")),
        Some(1800.0)
    );

    // Steady, native, no forecast: the forecast goes, the growth follows
    // the memory it is about.
    interval(
        &mut m,
        3,
        verdict(VerdictState::Steady, Some(MemoryKind::Native), Some(-3.0), None),
        leak(None),
    );
    let text = m.encode();
    assert_eq!(value(&text, &verdict_line("steady", Some("native"))), Some(1.0));
    assert_eq!(value(&text, &verdict_line("leak", Some("js-heap"))), Some(0.0));
    assert!(lines(&text, "heaptrace_time_to_limit_seconds{").is_empty(), "{text}");
    let growth = lines(&text, "heaptrace_memory_growth_bytes_per_second{");
    assert_eq!(
        growth,
        [format!("heaptrace_memory_growth_bytes_per_second{{{GROUP},memory=\"native\"}} -3.0")]
    );
}

#[test]
fn a_state_without_memory_gets_its_own_series_while_it_lasts() {
    let mut m = sink(false);
    attach(&mut m, 10);
    let odd = verdict(VerdictState::GcThrashing, None, None, Some(60.0));
    interval(&mut m, 1, odd, Verdict::unknown(""));
    let text = m.encode();
    assert_eq!(lines(&text, "heaptrace_memory_verdict{").len(), 14, "{text}");
    assert_eq!(value(&text, &format!("{} ", verdict_line("gc-thrashing", None))), Some(1.0));
    interval(&mut m, 2, Verdict::unknown(""), Verdict::unknown(""));
    let text = m.encode();
    assert_eq!(lines(&text, "heaptrace_memory_verdict{").len(), 13, "{text}");
    assert!(lines(&text, "heaptrace_time_to_limit_seconds{").is_empty());
}

#[test]
fn per_process_verdicts_carry_pid_and_comm() {
    let mut m = sink(true);
    attach(&mut m, 10);
    let native = verdict(VerdictState::Growing, Some(MemoryKind::Native), Some(10.0), Some(7200.0));
    interval(&mut m, 1, leak(Some(60.0)), native);
    let text = m.encode();
    let series = format!("{GROUP},pid=\"10\",comm=\"node\"");
    assert_eq!(
        value(&text, &format!("heaptrace_memory_verdict{{{series},state=\"growing\",memory=\"native\"}}")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, &format!("heaptrace_time_to_limit_seconds{{{series},limit=\"cgroup\"}}")),
        Some(7200.0)
    );
    // The group's verdict is not mixed in: one state set, the process's.
    assert_eq!(lines(&text, "heaptrace_memory_verdict{").len(), 13);
    assert_eq!(lines(&text, "heaptrace_time_to_limit_seconds{").len(), 1);
}

#[test]
fn groups_that_share_labels_show_the_worst_verdict() {
    // Cgroups outside containers carry only `node`.
    let mut m = sink(false);
    m.record(&group("/system.slice/a.service", 1.0, None, leak(Some(5000.0)))).unwrap();
    m.record(&group("/system.slice/b.service", 1.0, None, leak(Some(900.0)))).unwrap();
    m.record(&group("/system.slice/c.service", 1.0, None, Verdict::unknown(""))).unwrap();
    tick(&mut m, SEC, 0);
    let text = m.encode();
    assert_eq!(
        value(&text, r#"heaptrace_memory_verdict{node="node-1",state="leak",memory="js-heap"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(value(&text, r#"heaptrace_time_to_limit_seconds{node="node-1",limit="cgroup"}"#), Some(900.0));
}

#[test]
fn verdict_series_go_with_their_group() {
    let mut m = sink(false);
    attach(&mut m, 10);
    interval(&mut m, 1, leak(Some(100.0)), Verdict::unknown(""));
    let exit = Exit {
        ts: 2.0,
        pid: 10,
        comm: "node".into(),
        oom_killed: false,
        traced_s: 1.0,
        cgroup_id: 5,
        container: Some(container()),
    };
    m.record(&Record::Exit(exit)).unwrap();
    // No group record this interval: the group is gone.
    tick(&mut m, 2 * SEC, 0);
    let text = m.encode();
    for family in ["memory_verdict", "memory_growth_bytes_per_second", "time_to_limit_seconds"] {
        assert!(!text.contains(&format!("heaptrace_{family}{{")), "{family} stays: {text}");
    }
    tick(&mut m, 20 * SEC, 0);
    assert_eq!(m.series_sets(), 0);
}

fn death(pid: u32, cause: DeathCause) -> Record {
    Record::Death(Death {
        ts: 3.0,
        pid,
        comm: "node".into(),
        cause,
        signal: Some("SIGKILL".into()),
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
        allocation_sites: Vec::new(),
        heap: None,
        explanation: String::new(),
        cgroup_path: "/pod/server".into(),
        cgroup_id: 5,
        container: Some(container()),
        dump_path: None,
        flight: None,
    })
}

#[test]
fn deaths_are_counted_by_cause_from_zero() {
    let mut m = sink(false);
    attach(&mut m, 10);
    tick(&mut m, SEC, 1);
    let text = m.encode();
    for cause in ["v8-oom", "oom-kill", "signal"] {
        let series = format!("heaptrace_deaths_total{{{GROUP},cause=\"{cause}\"}}");
        assert_eq!(value(&text, &series), Some(0.0), "{text}");
    }
    m.record(&death(10, DeathCause::OomKill)).unwrap();
    tick(&mut m, 2 * SEC, 1);
    let text = m.encode();
    assert_eq!(value(&text, &format!("heaptrace_deaths_total{{{GROUP},cause=\"oom-kill\"}}")), Some(1.0));
    assert_eq!(value(&text, &format!("heaptrace_deaths_total{{{GROUP},cause=\"signal\"}}")), Some(0.0));
    // The OOM counter counts `oom` records only, as before.
    assert_eq!(value(&text, &format!("heaptrace_oom_kills_total{{{GROUP},source=\"kernel\"}}")), Some(0.0));
    // A death after the exit still counts, under the same labels.
    m.record(&death(11, DeathCause::V8Oom)).unwrap();
    tick(&mut m, 3 * SEC, 1);
    let text = m.encode();
    assert_eq!(value(&text, &format!("heaptrace_deaths_total{{{GROUP},cause=\"v8-oom\"}}")), Some(1.0));
}

#[test]
fn the_prefix_names_every_new_family() {
    let mut m = MetricsSink::new(MetricsConfig {
        node: "node-1".into(),
        per_process: false,
        grace_ns: 10 * SEC,
        prefix: "acme".into(),
    });
    attach(&mut m, 10);
    m.record(&death(10, DeathCause::Signal)).unwrap();
    interval(&mut m, 1, leak(Some(100.0)), Verdict::unknown(""));
    let text = m.encode();
    for name in [
        "acme_memory_verdict{",
        "acme_memory_growth_bytes_per_second{",
        "acme_time_to_limit_seconds{",
        "acme_deaths_total{",
        "acme_nodejs_heap_size_limit_bytes{",
    ] {
        assert!(text.contains(name), "{name} missing: {text}");
    }
    assert!(!text.contains("heaptrace_"));
}
