//! Allocation sites: where a process's memory comes from, by stack.
//!
//! The kernel takes a user stack at each call that allocates enough (an
//! mmap of writable memory, an mprotect that commits a range, brk growth);
//! the collector names each distinct stack once ([`Input::Stack`]); here
//! the calls are added up per named stack, and the ranges each call
//! allocated are kept in an interval map, so a later munmap, decommit or
//! brk shrink takes them off the site that allocated them. That gives,
//! exactly per site, bytes allocated and bytes still live.
//!
//! Stacks whose frames name the same functions are one site: every call of
//! a closure has its own `JSFunction`, so the kernel sees many stacks where
//! the user sees one place in the code.
//!
//! [`Input::Stack`]: crate::core::Input::Stack

mod frame;
mod table;
#[cfg(test)]
mod tests;

pub use frame::{Frame, FrameKind, RawFrame, short_file};
pub use table::{MAX_SITES, SiteGrowth, SiteTable};

use serde::Serialize;

/// One allocation site of one process: a named stack and what it allocated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AllocationSite {
    /// Bytes allocated here since tracing began (mapped, committed or grown).
    pub bytes: u64,
    /// Of those, bytes still mapped or committed now.
    pub live_bytes: u64,
    /// Of the live bytes, those in V8 heap chunks (256 KiB-aligned: the JS
    /// heap's pages and large objects); the rest is native memory.
    pub live_v8_bytes: u64,
    /// Allocating calls.
    pub count: u64,
    /// Innermost first.
    pub frames: Vec<Frame>,
}

/// Native frames that only say how memory is obtained, not who wants it:
/// libc's wrappers and malloc, and V8's page allocator. A site without JS
/// frames is named by the first frame past them (`SemiSpace::Commit`: the
/// young generation grew; `PagedSpace::Expand`: an old space did).
fn is_plumbing(f: &Frame) -> bool {
    const V8_PLUMBING: [&str; 6] = [
        "v8::base::",
        "v8::internal::MemoryAllocator::",
        "v8::internal::VirtualMemory::",
        "v8::internal::MemoryChunk::",
        "v8::internal::PageAllocator::",
        "v8::platform::",
    ];
    f.file.as_deref().is_some_and(|file| file.contains("/libc.so"))
        || V8_PLUMBING.iter().any(|prefix| f.function.starts_with(prefix))
}

impl AllocationSite {
    /// The first (innermost) JS frame that has a name, if any.
    pub fn first_js_frame(&self) -> Option<&Frame> {
        self.frames.iter().find(|f| f.kind == FrameKind::Js && f.is_named())
    }

    /// The frame a one-line answer names the site by: its first named JS
    /// frame in the application's code (Node's own `node:` modules, such as
    /// the `Buffer.alloc` path, are how, not who), else its first named JS
    /// frame, else its first named frame past libc and V8's page allocator
    /// (see [`is_plumbing`]), else its first frame.
    pub fn headline_frame(&self) -> Option<usize> {
        let named_js = |f: &Frame| f.kind == FrameKind::Js && f.is_named();
        let application =
            |f: &Frame| named_js(f) && !f.file.as_deref().is_some_and(|file| file.starts_with("node:"));
        let past_plumbing = |f: &Frame| f.is_named() && !is_plumbing(f);
        let position = |pred: &dyn Fn(&Frame) -> bool| self.frames.iter().position(pred);
        position(&application)
            .or_else(|| position(&named_js))
            .or_else(|| position(&past_plumbing))
            .or((!self.frames.is_empty()).then_some(0))
    }

    /// `handler (app.js:17)`: see [`Self::headline_frame`].
    pub fn headline(&self) -> String {
        self.headline_frame().map_or_else(|| "[unknown]".into(), |i| self.frames[i].label())
    }

    /// The headline and its nearest named caller of the same kind:
    /// `handler (app.js:17) ← Layer.handle (layer.js:95)`.
    pub fn headline_with_caller(&self) -> String {
        let Some(i) = self.headline_frame() else { return "[unknown]".into() };
        let head = &self.frames[i];
        let caller =
            self.frames[i + 1..].iter().find(|f| f.kind == head.kind && f.is_named() && !is_plumbing(f));
        match caller {
            Some(c) => format!("{} \u{2190} {}", head.label(), c.label()),
            None => head.label(),
        }
    }
}
