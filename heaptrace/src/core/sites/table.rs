//! One process's sites: counters per named stack, and which site each live
//! allocated range belongs to.

use std::{collections::HashMap, ops::Range};

use rangemap::RangeMap;

use super::{AllocationSite, Frame};
use crate::core::address_space::{GLIBC_ARENA_BYTES, V8_CHUNK_ALIGNMENT};

/// Distinct sites kept per process; calls from further stacks are added to
/// one overflow site, so a process with unbounded distinct stacks costs
/// bounded memory.
pub const MAX_SITES: usize = 4_096;

/// Distinct stack keys remembered per process. Past that the mapping from
/// key to site is forgotten and rebuilt as stacks are named again.
const MAX_STACK_KEYS: usize = 65_536;

#[derive(Clone, Debug, Default)]
struct Site {
    frames: Vec<Frame>,
    bytes: u64,
    live_bytes: u64,
    live_v8_bytes: u64,
    count: u64,
    /// Live bytes (V8, native) at the last two growth marks, for
    /// [`SiteTable::growth`].
    marks: [(u64, u64); 2],
}

/// Where a growth window's bytes went: the site that took most of it.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteGrowth {
    pub site: AllocationSite,
    /// Its share of the growth of that memory over the window, 0–1.
    pub share: f64,
    /// The bytes it grew by.
    pub bytes: u64,
}

/// Allocation sites of one process. See the module docs of `sites`.
#[derive(Clone, Debug, Default)]
pub struct SiteTable {
    sites: Vec<Site>,
    by_frames: HashMap<Vec<Frame>, usize>,
    by_stack: HashMap<u64, usize>,
    /// Live allocated ranges → the site that allocated them, and whether the
    /// allocation was a V8 heap chunk (decided once, from the whole range).
    owners: RangeMap<u64, (usize, bool)>,
    /// Calls whose stack was never named (evicted from the kernel's map
    /// before it was read): their bytes go to no site.
    pub unnamed_calls: u64,
    /// The brk at the last brk call, to turn a new break into a range.
    brk: Option<u64>,
}

impl SiteTable {
    /// Names stack `id`: later calls made from it count for the site of
    /// these frames.
    pub fn define(&mut self, id: u64, frames: Vec<Frame>) {
        if self.by_stack.len() >= MAX_STACK_KEYS {
            self.by_stack.clear();
        }
        let index = match self.by_frames.get(&frames) {
            Some(&i) => i,
            None if self.sites.len() + 1 >= MAX_SITES => self.overflow(),
            None => {
                self.sites.push(Site { frames: frames.clone(), ..Site::default() });
                self.by_frames.insert(frames, self.sites.len() - 1);
                self.sites.len() - 1
            }
        };
        self.by_stack.insert(id, index);
    }

    fn overflow(&mut self) -> usize {
        let frames = vec![Frame { function: "[other stacks]".into(), ..Frame::unknown() }];
        if let Some(&i) = self.by_frames.get(&frames) {
            return i;
        }
        self.sites.push(Site { frames: frames.clone(), ..Site::default() });
        self.by_frames.insert(frames, self.sites.len() - 1);
        self.sites.len() - 1
    }

    /// The site of a named stack.
    fn site_of(&mut self, stack: Option<u64>) -> Option<usize> {
        let id = stack?;
        let site = self.by_stack.get(&id).copied();
        if site.is_none() {
            self.unnamed_calls += 1;
        }
        site
    }

    /// The headline of stack `id`'s site (see [`AllocationSite::headline`]).
    pub fn headline_of(&self, id: u64) -> Option<String> {
        let site = &self.sites[*self.by_stack.get(&id)?];
        Some(export(site).headline())
    }

    /// An mmap of writable memory at `start`: allocated by `stack`'s site.
    /// Any other mmap replaces what was there.
    pub fn mapped(&mut self, start: u64, len: u64, stack: Option<u64>) {
        match self.site_of(stack) {
            Some(site) => self.claim(start..start.saturating_add(len), site, 1),
            None => self.release(start..start.saturating_add(len)),
        }
    }

    /// An mprotect: a writable range with a stack is committed by its site;
    /// PROT_NONE decommits. Other changes keep the owner.
    pub fn protected(&mut self, start: u64, len: u64, writable: bool, none: bool, stack: Option<u64>) {
        let range = start..start.saturating_add(len);
        if none {
            self.release(range);
        } else if writable && let Some(site) = self.site_of(stack) {
            self.claim(range, site, 1);
        }
    }

    pub fn unmapped(&mut self, start: u64, len: u64) {
        self.release(start..start.saturating_add(len));
    }

    /// mremap: the moved range keeps the site of its first owned piece.
    pub fn remapped(&mut self, old_start: u64, old_len: u64, new_start: u64, new_len: u64) {
        let old = old_start..old_start.saturating_add(old_len);
        let owner = self.owners.overlapping(&old).next().map(|(_, &(site, _))| site);
        self.release(old);
        if let Some(site) = owner {
            // Not a new allocation: keep the counters of calls, move the
            // live bytes.
            self.claim(new_start..new_start.saturating_add(new_len), site, 0);
        }
    }

    /// A brk call returned `brk`: growth is allocated by `stack`'s site,
    /// a shrink releases the top.
    pub fn brk(&mut self, brk: u64, stack: Option<u64>) {
        let previous = self.brk.replace(brk);
        let Some(old) = previous else { return };
        if brk > old {
            if let Some(site) = self.site_of(stack) {
                self.claim(old..brk, site, 1);
            }
        } else if brk < old {
            self.release(brk..old);
        }
    }

    /// A table for a process whose break is `brk` now (0: not known yet;
    /// the first brk call then only sets it).
    pub fn with_brk(brk: u64) -> Self {
        SiteTable { brk: (brk != 0).then_some(brk), ..SiteTable::default() }
    }

    fn claim(&mut self, range: Range<u64>, site: usize, calls: u64) {
        if range.is_empty() {
            return;
        }
        self.release(range.clone());
        let len = range.end - range.start;
        let v8 = in_v8_chunk(&range);
        let s = &mut self.sites[site];
        if calls > 0 {
            s.bytes += len;
            s.count += calls;
        }
        s.live_bytes += len;
        if v8 {
            s.live_v8_bytes += len;
        }
        self.owners.insert(range, (site, v8));
    }

    fn release(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        let pieces: Vec<(u64, usize, bool)> = self
            .owners
            .overlapping(&range)
            .map(|(r, &(site, v8))| (r.end.min(range.end) - r.start.max(range.start), site, v8))
            .collect();
        if pieces.is_empty() {
            return;
        }
        for (len, site, v8) in pieces {
            let s = &mut self.sites[site];
            s.live_bytes = s.live_bytes.saturating_sub(len);
            if v8 {
                s.live_v8_bytes = s.live_v8_bytes.saturating_sub(len);
            }
        }
        self.owners.remove(range);
    }

    /// Moves the growth window on: the window is always the time between
    /// the mark before last and now (called each minute by the diagnosis).
    pub fn mark(&mut self) {
        for s in &mut self.sites {
            s.marks = [s.marks[1], (s.live_v8_bytes, s.live_bytes - s.live_v8_bytes)];
        }
    }

    /// The site that took most of the growth of V8 memory (`v8`) or native
    /// memory over the growth window, if any grew.
    pub fn growth(&self, v8: bool) -> Option<SiteGrowth> {
        let grown = |s: &Site| {
            let (then_v8, then_native) = s.marks[0];
            if v8 {
                s.live_v8_bytes.saturating_sub(then_v8)
            } else {
                (s.live_bytes - s.live_v8_bytes).saturating_sub(then_native)
            }
        };
        let total: u64 = self.sites.iter().map(grown).sum();
        let (best, bytes) = self.sites.iter().map(|s| (s, grown(s))).max_by_key(|&(_, g)| g)?;
        (bytes > 0).then(|| SiteGrowth { site: export(best), share: bytes as f64 / total as f64, bytes })
    }

    /// Every site that allocated anything, most live bytes first, then most
    /// bytes allocated.
    pub fn sites(&self) -> Vec<AllocationSite> {
        let mut out: Vec<AllocationSite> = self.sites.iter().filter(|s| s.count > 0).map(export).collect();
        out.sort_by(|a, b| (b.live_bytes, b.bytes, &a.frames).cmp(&(a.live_bytes, a.bytes, &b.frames)));
        out
    }

    pub fn is_empty(&self) -> bool {
        self.sites.iter().all(|s| s.count == 0)
    }
}

fn export(s: &Site) -> AllocationSite {
    AllocationSite {
        bytes: s.bytes,
        live_bytes: s.live_bytes,
        live_v8_bytes: s.live_v8_bytes,
        count: s.count,
        frames: s.frames.clone(),
    }
}

/// The same rule as [`crate::core::address_space::AddressSpace::committed_split`]:
/// V8 allocates every heap chunk on its 256 KiB alignment.
fn in_v8_chunk(range: &Range<u64>) -> bool {
    range.start.is_multiple_of(V8_CHUNK_ALIGNMENT) && range.end - range.start != GLIBC_ARENA_BYTES
}
