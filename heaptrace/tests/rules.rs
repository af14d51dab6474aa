//! The alerting rules in deploy/prometheus: `promtool check rules` and
//! `promtool test rules` pass, the PrometheusRule holds exactly the plain
//! file's rules, and every metric they use is one the agent serves and
//! docs/metrics.md lists. Unprivileged; never skips: without promtool
//! (Debian's `prometheus` package, which scripts/setup.sh installs) it
//! fails.

mod support;

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use heaptrace::{
    agent::metrics::{MetricsConfig, MetricsSink},
    core::{
        Record,
        container::{ContainerRef, Runtime},
        gc::GcKind,
        input::{CgroupVersion, Origin},
        record::{
            Attached, Backing, Gc, GroupSnapshot, LargeMapping, LimitKind, MappingOp, MemoryKind, Snapshot,
            Verdict, VerdictState,
        },
    },
    output::{CollectorStats, Sink},
};
use support::repo_root;
use yaml_rust2::{Yaml, YamlLoader};

fn rules_dir() -> PathBuf {
    repo_root().join("deploy/prometheus")
}

/// Runs promtool with `args` in deploy/prometheus; its output, on success.
fn promtool(args: &[&str]) -> String {
    let out = match Command::new("promtool").args(args).current_dir(rules_dir()).output() {
        Ok(out) => out,
        Err(e) => {
            panic!("cannot run promtool ({e}): install Debian's `prometheus` package (scripts/setup.sh does)")
        }
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {}: {text}", args.join(" "));
    text
}

/// The one YAML document of a file in deploy/prometheus.
fn yaml(name: &str) -> Yaml {
    let path = rules_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(docs.len(), 1, "{}: one document", path.display());
    docs.remove(0)
}

/// Every rule of a `groups:` list.
fn rules(groups: &Yaml) -> Vec<&Yaml> {
    let groups = groups.as_vec().expect("groups is a list");
    groups.iter().flat_map(|g| g["rules"].as_vec().expect("a group's rules").iter()).collect()
}

#[test]
fn the_rules_pass_promtool_check() {
    let out = promtool(&["check", "rules", "heaptrace.rules.yml"]);
    assert!(out.contains("SUCCESS: 3 rules found"), "{out}");
}

#[test]
fn the_rules_pass_their_promtool_tests() {
    let out = promtool(&["test", "rules", "heaptrace.rules.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn the_prometheus_rule_holds_the_same_rules() {
    let plain = yaml("heaptrace.rules.yml");
    let operator = yaml("heaptrace-rules.yaml");
    assert_eq!(operator["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    assert_eq!(operator["kind"].as_str(), Some("PrometheusRule"));
    assert!(operator["metadata"]["name"].as_str().is_some());
    // Parsed, so layout and quoting may differ but no value may.
    assert!(!plain["groups"].is_badvalue(), "heaptrace.rules.yml has no groups");
    assert_eq!(
        operator["spec"]["groups"], plain["groups"],
        "the PrometheusRule's spec.groups differ from heaptrace.rules.yml"
    );
    let alerts: Vec<&str> = rules(&plain["groups"]).iter().filter_map(|r| r["alert"].as_str()).collect();
    assert_eq!(alerts, ["HeaptraceMemoryLeak", "HeaptraceMemoryLimitWithinAnHour", "HeaptraceGcThrashing"]);
    for rule in rules(&plain["groups"]) {
        let name = rule["alert"].as_str().unwrap();
        assert!(rule["for"].as_str().is_some(), "{name}: no `for:`");
        assert!(rule["labels"]["severity"].as_str().is_some(), "{name}: no severity");
        for annotation in ["summary", "description"] {
            let text = rule["annotations"][annotation].as_str().unwrap_or_default();
            assert!(
                text.contains("$labels.pod") && text.contains("$labels.container"),
                "{name}: {annotation}"
            );
        }
    }
}

/// One traced process's records, enough for every family to have a
/// series (families without one are not described at all).
fn records() -> Vec<Record> {
    let container = Some(ContainerRef {
        runtime: Runtime::Containerd,
        container_id: "a1".repeat(32),
        pod_uid: Some("0f4a8c2e-1b3d-4e5f-8a9b-0c1d2e3f4a5b".into()),
        qos: None,
        namespace: Some("shop".into()),
        pod: Some("api-1".into()),
        container: Some("server".into()),
    });
    let verdict = Verdict {
        state: VerdictState::Leak,
        memory: Some(MemoryKind::JsHeap),
        slope_bytes_per_s: Some(1e6),
        basis: None,
        time_to_limit_s: Some(600.0),
        limit: Some(LimitKind::V8Heap),
        limit_bytes: Some(1 << 30),
        evidence: String::new(),
        site: None,
    };
    let (pid, comm, ts) = (10, String::from("node"), 1.0);
    vec![
        Record::Attach(Attached {
            ts,
            pid,
            comm: comm.clone(),
            origin: Origin::Start,
            gc_probes: true,
            cgroup_id: 5,
            container: container.clone(),
            ns_pid: Some(1),
        }),
        Record::Group(GroupSnapshot {
            ts,
            cgroup_path: "/kubepods/pod/a1".into(),
            cgroup_id: 5,
            container: container.clone(),
            processes: 1,
            exited_processes: 0,
            rss_bytes: 1 << 20,
            rss_growth_bytes: 0,
            committed_growth_bytes: 0,
            memory_usage_bytes: Some(1 << 20),
            memory_usage_growth_bytes: Some(0),
            memory_limit_bytes: Some(1 << 30),
            memory_headroom_bytes: Some((1 << 30) - (1 << 20)),
            memory_source: Some(CgroupVersion::V2),
            gc_count: 1,
            gc_pause_ns: 1_000_000,
            verdict: verdict.clone(),
        }),
        Record::Snapshot(Snapshot {
            ts,
            pid,
            comm: comm.clone(),
            rss_bytes: 1 << 20,
            rss_anon_bytes: 1 << 20,
            rss_file_bytes: 0,
            rss_shmem_bytes: 0,
            vm_bytes: 1 << 30,
            mapped_bytes: 1 << 20,
            mapped_anon_bytes: 1 << 20,
            mapped_file_bytes: 0,
            committed_bytes: 1 << 20,
            brk_bytes: 0,
            calls: Default::default(),
            rss_growth_bytes: 0,
            rss_growth_bytes_per_s: 0.0,
            mapped_growth_bytes: 0,
            committed_growth_bytes: 0,
            brk_growth_bytes: 0,
            cgroup_id: 5,
            container: container.clone(),
            ns_pid: Some(1),
            gc_count: 1,
            gc_pause_ns: 1_000_000,
            marking_steps: 0,
            marking_step_ns: 0,
            weak_callbacks: 0,
            weak_callback_ns: 0,
            heap_after_last_major_bytes: Some(1 << 20),
            v8_heap_limit_bytes: Some(1 << 30),
            v8_old_generation_limit_bytes: None,
            native_bytes: 0,
            verdict,
        }),
        Record::Gc(Gc {
            ts,
            pid,
            tid: pid,
            kind: GcKind::Major,
            collector: "Mark-Compact",
            reason: "allocation failure",
            pause_ns: 1_000_000,
            heap_before_bytes: 2 << 20,
            heap_after_bytes: 1 << 20,
            marking_steps: 0,
            marking_step_ns: 0,
            marking_start_ns: 0,
            cgroup_id: 5,
            container: container.clone(),
        }),
        Record::Mapping(LargeMapping {
            ts,
            pid,
            tid: pid,
            op: MappingOp::Mmap,
            addr: 0x7f00_0000_0000,
            len: 4 << 20,
            prot: "rw-p".into(),
            flags: 0x22,
            backing: Some(Backing::Anon),
            cgroup_id: 5,
            site: None,
        }),
    ]
}

/// Names that samples of the agent's exposition carry, from its `# TYPE`
/// lines, with every family fed.
fn served_names() -> BTreeSet<String> {
    let mut sink = MetricsSink::new(MetricsConfig {
        node: "node".into(),
        per_process: false,
        grace_ns: 60_000_000_000,
        prefix: "heaptrace".into(),
    });
    for r in records() {
        sink.record(&r).unwrap();
    }
    sink.tick(&CollectorStats { now_ns: 1_000_000_000, ..Default::default() });
    sink.set_self_usage(0.5, 1 << 20);
    let mut names = BTreeSet::new();
    for line in sink.encode().lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let (name, kind) = rest.split_once(' ').unwrap();
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    names
}

/// `heaptrace_...` names in a text (an expression, a template).
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("heaptrace_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end =
            tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_metric_in_the_rules_is_served_and_documented() {
    let served = served_names();
    // Every family: a missing one would pass the checks below unseen.
    for name in [
        "heaptrace_memory_verdict",
        "heaptrace_memory_growth_bytes_per_second",
        "heaptrace_time_to_limit_seconds",
        "heaptrace_deaths_total",
        "heaptrace_oom_kills_total",
        "heaptrace_large_allocations_total",
        "heaptrace_nodejs_gc_duration_seconds_bucket",
        "heaptrace_nodejs_heap_size_limit_bytes",
        "heaptrace_container_memory_headroom_bytes",
        "heaptrace_agent_resident_memory_bytes",
    ] {
        assert!(served.contains(name), "{name} is not served: {served:?}");
    }
    let plain = yaml("heaptrace.rules.yml");
    let mut used = BTreeSet::new();
    for rule in rules(&plain["groups"]) {
        used.extend(metric_names(rule["expr"].as_str().unwrap()));
        if let Some(annotations) = rule["annotations"].as_hash() {
            for text in annotations.values().filter_map(Yaml::as_str) {
                used.extend(metric_names(text));
            }
        }
    }
    assert!(used.contains("heaptrace_memory_verdict"), "{used:?}");
    let unknown: Vec<&String> = used.difference(&served).collect();
    assert!(unknown.is_empty(), "the rules use metrics the agent does not serve: {unknown:?}");
    // And every served family is in the reference.
    let docs = std::fs::read_to_string(repo_root().join("docs/metrics.md")).unwrap();
    let undocumented: Vec<&String> = served
        .iter()
        .filter(|n| !n.ends_with("_bucket") && !n.ends_with("_sum") && !n.ends_with("_count"))
        .filter(|n| !docs.contains(&format!("`{n}`")))
        .collect();
    assert!(undocumented.is_empty(), "docs/metrics.md does not list {undocumented:?}");
}
