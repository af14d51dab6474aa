//! heaptrace: finds out, live and without restarts, why a process's memory
//! grows. See docs/architecture.md for how the pieces fit.
//!
//! Data flows one way: `kernel` and `target` (edges: BPF, /proc) produce
//! [`core::Input`]s; the pure [`core::Model`] turns them into
//! [`core::Record`]s; an [`output::Sink`] writes them.

pub mod agent;
pub mod cli;
pub mod clock;
pub mod core;
pub mod kernel;
pub mod output;
pub mod run;
pub mod symbols;
pub mod target;
pub mod units;
