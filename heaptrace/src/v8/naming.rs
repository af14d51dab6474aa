//! The stack namer's handle on JS frames (see `crate::symbols::stacks`):
//! one [`JsFrameNamer`] per process, from its binary's postmortem
//! metadata, and its perf map when it writes one.

use std::collections::HashMap;

use super::{Found, JsFrameNamer, V8Support, perfmap::PerfMap};
use crate::symbols::stacks::{JsAnswer, JsNamer};

/// What names one process's JS frames.
pub(super) struct ProcessFrames {
    /// None: its binary has no V8 metadata (stripped, not node).
    namer: Option<JsFrameNamer>,
    why_not: &'static str,
    /// `/tmp/perf-PID.map` in its mount namespace, if it writes one
    /// (`--perf-basic-prof`).
    perf: Option<PerfMap>,
}

pub(super) type Frames = HashMap<u32, ProcessFrames>;

impl V8Support {
    fn frames_of(&mut self, pid: u32) -> &mut ProcessFrames {
        let loader = &mut self.loader;
        self.frames.entry(pid).or_insert_with(|| {
            let (namer, why_not) = match loader.find_in_process(pid) {
                Ok(Found::V8(found)) => match found.binary.postmortem.clone() {
                    Some(postmortem) => (Some(JsFrameNamer::new(pid, postmortem)), ""),
                    None => (None, "its V8 has no postmortem metadata (stripped?)"),
                },
                Ok(Found::NotV8 { .. }) => (None, "no V8 found in it"),
                Err(_) => (None, "its binary could not be read"),
            };
            ProcessFrames { namer, why_not, perf: PerfMap::read(pid).ok() }
        })
    }
}

impl JsNamer for V8Support {
    fn name(&mut self, pid: u32, function_slot: u64) -> JsAnswer {
        let frames = self.frames_of(pid);
        match &mut frames.namer {
            Some(namer) => namer.name(function_slot).map_err(|why| why.key().to_owned()),
            None => Err(frames.why_not.to_owned()),
        }
    }

    fn perf_map(&mut self, pid: u32, pc: u64) -> Option<String> {
        let perf = self.frames_of(pid).perf.as_mut()?;
        // Code compiled since the last read is appended at the end.
        if perf.lookup(pc).is_none() {
            let _ = perf.refresh();
        }
        perf.lookup(pc).filter(|s| s.is_js()).map(|s| s.function().to_owned())
    }
}
