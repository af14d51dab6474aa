//! `heaptrace heap PID`: what is in a live Node process's JS heap and what
//! keeps it there, through Node's own inspector (opt-in: unlike the rest of
//! heaptrace, this touches the process).
//!
//! - [`inspector`]: the checks before anything is sent (refusals), opening
//!   the inspector with SIGUSR1, the DevTools protocol over a WebSocket made
//!   inside the process's network namespace, and closing it again.
//! - [`snapshot`]: heap snapshot analysis, pure: classes with retained
//!   sizes, the diff of two snapshots, retainer paths.
//! - [`sampling`]: the sampling heap profiler's profile as allocation sites.
//! - [`safety`]: what a snapshot costs the process, said first, and the
//!   bounds it is refused above.
//! - [`report`]: the answer as plain values for every output.

pub mod inspector;
pub mod report;
pub mod run;
pub mod safety;
pub mod sampling;
pub mod snapshot;

pub use report::{ClassStats, Cost, HeapMode, HeapReport, PathStep, RetainerPath, SampledSite};
