//! `--on-leak`: once a process's JS heap is judged to leak, look inside it
//! once (a heap diff or the sampling profiler, through its inspector) while
//! tracing goes on. The inspection runs as its own task; its report comes
//! back through a channel and is fed to the model like any other input, so
//! it reaches the outputs and the process's death record.

use std::{collections::BTreeSet, time::Duration};

use tokio::sync::{mpsc, watch};

use crate::{
    core::{
        Record,
        verdict::{MemoryKind, VerdictState},
    },
    heap::{
        HeapReport,
        run::{self, HeapConfig, Mode},
    },
};

/// What `--on-leak` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnLeakAction {
    /// Two heap snapshots `--on-leak-over` apart: what grew, what holds it.
    HeapDiff,
    /// The sampling heap profiler for `--on-leak-over` (no pause).
    Sample,
}

pub type Outcome = (u32, Result<HeapReport, String>);

pub struct OnLeak {
    action: Option<(OnLeakAction, Duration)>,
    /// Processes looked into (or being looked into): once each.
    started: BTreeSet<u32>,
    tasks: tokio::task::JoinSet<()>,
    tx: mpsc::UnboundedSender<Outcome>,
    rx: mpsc::UnboundedReceiver<Outcome>,
    stop: watch::Sender<bool>,
}

impl OnLeak {
    pub fn new(action: Option<(OnLeakAction, Duration)>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            action,
            started: BTreeSet::new(),
            tasks: Default::default(),
            tx,
            rx,
            stop: watch::channel(false).0,
        }
    }

    /// Starts an inspection for each process that a record about to be
    /// written judges to leak in its JS heap.
    pub fn watch(&mut self, records: &[Record]) {
        let Some((action, over)) = self.action else { return };
        for pid in records.iter().filter_map(leaking_js_heap) {
            if !self.started.insert(pid) {
                continue;
            }
            let mode = match action {
                OnLeakAction::HeapDiff => Mode::Diff(over),
                OnLeakAction::Sample => Mode::Sample(over),
            };
            let config = HeapConfig {
                pid,
                mode,
                max_heap: run::DEFAULT_MAX_HEAP,
                force: false,
                save: None,
                retainers: 3,
            };
            let (tx, mut stop) = (self.tx.clone(), self.stop.subscribe());
            eprintln!("heaptrace: pid {pid}: its JS heap leaks; looking inside it (--on-leak)");
            self.tasks.spawn_local(async move {
                let mut say = |line: String| eprintln!("heaptrace: {line}");
                let cancel = async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                };
                let result = run::inspect_until(&config, &mut say, cancel).await;
                let _ = tx.send((pid, result.map_err(|e| e.to_string())));
            });
        }
    }

    /// The next finished inspection; pending while none is.
    pub async fn next(&mut self) -> Outcome {
        match self.rx.recv().await {
            Some(outcome) => outcome,
            // `self.tx` lives as long as self: never closed.
            None => std::future::pending().await,
        }
    }

    /// Stops the inspections under way and waits until each has closed its
    /// inspector, so no process is left with one open.
    pub async fn finish(&mut self) -> Vec<Outcome> {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        let mut done = Vec::new();
        while let Ok(outcome) = self.rx.try_recv() {
            done.push(outcome);
        }
        done
    }
}

/// The pid of a verdict record that says a process's JS heap leaks.
fn leaking_js_heap(record: &Record) -> Option<u32> {
    let Record::Verdict(change) = record else { return None };
    let v = &change.verdict;
    let js = matches!(v.memory, Some(MemoryKind::JsHeap | MemoryKind::Both));
    (v.state == VerdictState::Leak && js).then_some(change.pid).flatten()
}
