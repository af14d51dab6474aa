//! Naming the frames of captured stacks: native frames from the files a
//! process maps, JS frames from V8's postmortem metadata and the process's
//! memory (see `crate::v8`), and the one namer the collector uses.

pub mod stacks;

pub use stacks::{NamingStats, StackNamer};
