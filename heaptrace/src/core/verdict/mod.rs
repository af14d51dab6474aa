//! Leak or seesaw: the verdict on a process's or a group's memory.

mod types;

pub use types::*;
