//! Allocation sites: where memory comes from, by stack.
//!
//! (Being built for issue 11; see frame.rs for the shared types.)

mod frame;

pub use frame::{Frame, FrameKind, RawFrame, short_file};

use serde::Serialize;

/// One allocation site of one process: a named stack and what it allocated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AllocationSite {
    /// Bytes allocated here since tracing began (mapped, committed or grown).
    pub bytes: u64,
    /// Of those, bytes still mapped or committed now.
    pub live_bytes: u64,
    /// Allocating calls.
    pub count: u64,
    /// Innermost first.
    pub frames: Vec<Frame>,
}

impl AllocationSite {
    /// The first (innermost) JS frame that has a name, if any.
    pub fn first_js_frame(&self) -> Option<&Frame> {
        self.frames.iter().find(|f| f.kind == FrameKind::Js && f.is_named())
    }
}
