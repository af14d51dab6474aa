//! The collector's stack namer: turns a kernel stack into named frames,
//! once per stack key and process.

use std::collections::{HashMap, HashSet};

use heaptrace_common::StackTrace;

use crate::{core::sites::Frame, kernel::StackStats};

/// How naming went, for `-v` and the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NamingStats {
    /// Stacks named.
    pub stacks: u64,
    /// Stacks the kernel's LRU map had evicted before they were read.
    pub lost: u64,
    /// JS frames named, and JS frames left as `[JS]`.
    pub js_named: u64,
    pub js_unnamed: u64,
    /// Frames in no file and no JS function.
    pub unknown: u64,
}

#[derive(Default)]
pub struct StackNamer {
    known: HashMap<u32, HashSet<u64>>,
    pub stats: NamingStats,
}

impl StackNamer {
    /// Whether stack `id` of `pid` was named already.
    pub fn is_known(&self, pid: u32, id: u64) -> bool {
        self.known.get(&pid).is_some_and(|ids| ids.contains(&id))
    }

    /// Names a stack of `pid` and remembers its key.
    pub fn name(&mut self, pid: u32, id: u64, trace: Option<&StackTrace>) -> Vec<Frame> {
        self.known.entry(pid).or_default().insert(id);
        let Some(trace) = trace else {
            self.stats.lost += 1;
            return vec![Frame::unknown()];
        };
        self.stats.stacks += 1;
        let len = (trace.len as usize).min(trace.pcs.len());
        trace.pcs[..len]
            .iter()
            .map(|pc| Frame { function: format!("0x{pc:x}"), ..Frame::unknown() })
            .collect()
    }

    /// One line on how stack capture and naming went, for `-v`.
    pub fn describe(&self, kernel: StackStats) -> String {
        let s = &self.stats;
        format!(
            "stacks: {} captured in the kernel ({} distinct, {} cut at {} frames, {} past frames without              frame pointers, {} of those not recovered); {} named, {} lost before they were read;              JS frames: {} named, {} left as [JS]; {} frames in no file and no JS function",
            kernel.captured,
            kernel.inserted,
            kernel.truncated,
            heaptrace_common::MAX_STACK_FRAMES,
            kernel.scanned,
            kernel.scan_failed,
            s.stacks,
            s.lost,
            s.js_named,
            s.js_unnamed,
            s.unknown,
        )
    }

    /// A process is gone (or exec'd): its stacks and caches go.
    pub fn forget(&mut self, pid: u32) {
        self.known.remove(&pid);
    }
}
