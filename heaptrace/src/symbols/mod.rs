//! Naming the frames of captured stacks.
//!
//! The kernel captures user stacks as instruction addresses plus, per frame,
//! the word a V8 JS frame keeps its function in. [`native`] names addresses
//! that fall in files (node, libc, native addons) and says which fall in
//! anonymous memory, where V8's JIT code lives; JS frames are named by
//! `crate::v8` from V8's postmortem metadata and the process's memory;
//! [`stacks`] is the one namer the collector uses, combining both.

pub mod native;
pub mod stacks;

pub use stacks::{NamingStats, StackNamer};
