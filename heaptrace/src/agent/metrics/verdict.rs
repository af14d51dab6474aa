//! The verdict's series: `memory_verdict` (a state set), the growth it
//! rests on, and the forecast of the nearest limit.
//!
//! `memory_verdict` follows the OpenMetrics StateSet (prom-client's and
//! client_python's `Enum`, kube-state-metrics' `kube_pod_status_phase`):
//! every (state, memory) pair is exposed for as long as its group lives,
//! 1 for the current pair and 0 for the others. Series do not come and go
//! as the verdict changes, so `for:` in alerts, `changes()` and
//! `avg_over_time()` (the share of time in a state) see one continuous
//! series per pair, and "not in this state" (0) is told apart from "no
//! data" (absent). The pairs: `unknown` without `memory`, and every other
//! state with each of `js-heap`, `native` and `both`. A verdict outside
//! that set (a state without `memory`) gets its own series while it lasts.
//!
//! The growth and the forecast are measurements, not states: they exist
//! only while the verdict has them, and go (a staleness marker in
//! Prometheus, so alerts resolve at once) when it does not.

use std::collections::HashMap;

use super::{Labels, MetricsSink};
use crate::core::record::{MemoryKind, Verdict, VerdictState};

/// The states that concern a memory.
const JUDGED: [VerdictState; 4] =
    [VerdictState::Steady, VerdictState::Growing, VerdictState::Leak, VerdictState::GcThrashing];
const MEMORIES: [MemoryKind; 3] = [MemoryKind::JsHeap, MemoryKind::Native, MemoryKind::Both];

/// The label sets under which one series' verdict is exposed now.
#[derive(Clone, Debug, Default)]
pub(super) struct Exposed {
    states: Vec<Labels>,
    growth: Option<Labels>,
    time_to_limit: Option<Labels>,
}

impl Exposed {
    pub(super) fn label_sets(&self) -> usize {
        self.states.len() + usize::from(self.growth.is_some()) + usize::from(self.time_to_limit.is_some())
    }
}

fn severity(state: VerdictState) -> u8 {
    match state {
        VerdictState::Unknown => 0,
        VerdictState::Steady => 1,
        VerdictState::Growing => 2,
        VerdictState::Leak => 3,
        VerdictState::GcThrashing => 4,
    }
}

/// Whether `a` is the worse news: the more severe state, then the nearer
/// limit.
fn worse(a: &Verdict, b: &Verdict) -> bool {
    let key = |v: &Verdict| (severity(v.state), -v.time_to_limit_s.unwrap_or(f64::INFINITY));
    key(a).partial_cmp(&key(b)).is_some_and(|o| o.is_gt())
}

fn keep_worst(into: &mut HashMap<Labels, Verdict>, labels: &Labels, v: &Verdict) {
    match into.get_mut(labels) {
        Some(have) if worse(v, have) => *have = v.clone(),
        Some(_) => {}
        None => {
            into.insert(labels.clone(), v.clone());
        }
    }
}

fn with_opt(labels: &Labels, name: &'static str, value: Option<&'static str>) -> Labels {
    let mut l = labels.clone();
    if let Some(v) = value {
        l.push((name, v.to_owned()));
    }
    l
}

fn state_labels(series: &Labels, state: VerdictState, memory: Option<MemoryKind>) -> Labels {
    with_opt(&MetricsSink::with(series, "state", state.name()), "memory", memory.map(MemoryKind::name))
}

/// The state set of a series: every pair, and the current one (1).
fn state_set(series: &Labels, v: &Verdict) -> Vec<(Labels, i64)> {
    let current = state_labels(series, v.state, v.memory);
    let mut set = vec![state_labels(series, VerdictState::Unknown, None)];
    for state in JUDGED {
        set.extend(MEMORIES.map(|m| state_labels(series, state, Some(m))));
    }
    if !set.contains(&current) {
        set.push(current.clone());
    }
    set.into_iter()
        .map(|l| {
            let on = i64::from(l == current);
            (l, on)
        })
        .collect()
}

impl MetricsSink {
    /// The verdict that speaks for each series: its group's (with
    /// `--per-process`, its process's). Where several groups share one
    /// label set (cgroups outside containers carry only `node`), or no
    /// group record came (a `--pid` selection outside containers), the
    /// worst verdict among them.
    fn current_verdicts(&self) -> HashMap<Labels, Verdict> {
        let mut out = HashMap::new();
        if !self.cfg.per_process {
            for g in self.groups.values() {
                keep_worst(&mut out, &self.group_labels(g.container.as_ref()), &g.verdict);
            }
        }
        let grouped: Vec<Labels> = out.keys().cloned().collect();
        for p in self.procs.values() {
            let Some(s) = &p.last else { continue };
            if !grouped.contains(&p.series) {
                keep_worst(&mut out, &p.series, &s.verdict);
            }
        }
        out
    }

    /// Sets the verdict series and removes those no verdict stands behind
    /// any more (a group that went, a pair outside the set, a growth or
    /// forecast that ended).
    pub(super) fn publish_verdicts(&mut self) {
        let mut now: HashMap<Labels, Exposed> = HashMap::new();
        for (series, v) in self.current_verdicts() {
            let f = &self.f;
            let mut e = Exposed::default();
            for (labels, on) in state_set(&series, &v) {
                f.verdict.get_or_create(&labels).set(on);
                e.states.push(labels);
            }
            if let Some(slope) = v.slope_bytes_per_s {
                let labels = with_opt(&series, "memory", v.memory.map(MemoryKind::name));
                f.memory_growth.get_or_create(&labels).set(slope);
                e.growth = Some(labels);
            }
            if let Some(t) = v.time_to_limit_s {
                let labels = with_opt(&series, "limit", v.limit.map(|l| l.name()));
                f.time_to_limit.get_or_create(&labels).set(t);
                e.time_to_limit = Some(labels);
            }
            now.insert(series, e);
        }
        for (series, old) in std::mem::take(&mut self.verdicts) {
            let new = now.get(&series).cloned().unwrap_or_default();
            for labels in old.states.iter().filter(|l| !new.states.contains(l)) {
                self.f.verdict.remove(labels);
            }
            if let Some(labels) = old.growth.filter(|l| new.growth.as_ref() != Some(l)) {
                self.f.memory_growth.remove(&labels);
            }
            if let Some(labels) = old.time_to_limit.filter(|l| new.time_to_limit.as_ref() != Some(l)) {
                self.f.time_to_limit.remove(&labels);
            }
        }
        self.verdicts = now;
    }
}
