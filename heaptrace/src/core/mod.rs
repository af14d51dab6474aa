//! The pure aggregation core: decoded kernel events, samples and attach-time
//! facts go in ([`Input`]); snapshots, findings and summaries come out
//! ([`Record`]). No aya, no tokio, no `/proc`: live tracing, the replay of a
//! recording and the agent all drive the same [`Model`].

pub mod address_space;
pub mod container;
mod death;
mod diagnose;
mod findings;
pub mod gc;
mod group;
pub mod input;
pub mod model;
pub mod process;
pub mod record;
pub mod recorder;
mod report;
pub mod sites;
pub mod verdict;

pub use input::{
    CallCounts, Event, EventKind, Input, Mapping, MemHook, MemOp, ProcStatus, ProcessInfo, Sample,
};
pub use model::{Model, ModelConfig};
pub use record::Record;

#[cfg(test)]
mod tests;
