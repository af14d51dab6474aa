//! heaptrace: finds out, live and without restarts, why a process's memory
//! grows. See docs/architecture.md for how the pieces fit.
//!
//! Data flows one way: `kernel` (BPF) and `host` (/proc) are the edges; the
//! `collect` loop turns what they report into [`core::Input`]s, with its
//! decisions in the pure `collect::lifecycle`; the pure [`core::Model`]
//! turns inputs into [`core::Record`]s; an [`output::Sink`] writes them.
//! Everything about V8 (finding it, probing it, holding a new process) is
//! in `v8`; naming the frames of captured stacks is in `symbols`.

pub mod agent;
pub mod cli;
pub mod clock;
pub mod collect;
pub mod core;
pub mod heap;
pub mod host;
pub mod kernel;
pub mod output;
pub mod recording;
pub mod symbols;
pub mod tui;
pub mod units;
pub mod v8;
