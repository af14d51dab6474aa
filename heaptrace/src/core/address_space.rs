//! One process's mmap-managed address space, as an interval map.
//!
//! The kernel streams each successful mmap, munmap, mremap and mprotect;
//! applying them here in order gives exact live figures. A range map is
//! needed because calls do not line up with mappings: V8 maps 508 KiB and
//! unmaps a 252 KiB slack from it, commits 256 KiB of a PROT_NONE reservation
//! with mprotect, and a munmap may cover several mappings or holes.
//!
//! Every operation is idempotent "set the state of this range", so events
//! that raced the `/proc/PID/maps` read at attach can be applied on top of it
//! without double counting.
//!
//! The main thread's stack, the brk heap, vdso/vvar and vsyscall are not
//! created by mmap and are kept out (brk is tracked on its own).

use std::{collections::HashMap, ops::Range};

use rangemap::RangeMap;

/// `PROT_*` bits as the kernel takes them.
pub mod prot {
    pub const READ: u32 = 0x1;
    pub const WRITE: u32 = 0x2;
    pub const EXEC: u32 = 0x4;
}

/// What one piece of the address space is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// `PROT_*` bits; 0 is PROT_NONE (reserved, not committed).
    pub prot: u32,
    /// Backed by a file (false: anonymous).
    pub file: bool,
    /// MAP_SHARED.
    pub shared: bool,
    /// Start address of the mapping that created this piece. It keeps two
    /// adjacent mappings with equal attributes apart (the range map would
    /// otherwise merge them) so that chunk sizes stay visible.
    pub origin: u64,
}

impl Region {
    pub fn committed(&self) -> bool {
        self.prot != 0
    }
}

/// Running totals, updated on every change so a snapshot costs nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub mapped: u64,
    pub mapped_file: u64,
    pub committed: u64,
    pub committed_anon: u64,
}

impl Totals {
    fn add(&mut self, len: u64, r: &Region) {
        self.mapped += len;
        if r.file {
            self.mapped_file += len;
        }
        if r.committed() {
            self.committed += len;
            if !r.file {
                self.committed_anon += len;
            }
        }
    }

    fn sub(&mut self, len: u64, r: &Region) {
        // Saturating: a total can never go negative, and a bug here must not
        // become a panic in a production tracer.
        self.mapped = self.mapped.saturating_sub(len);
        if r.file {
            self.mapped_file = self.mapped_file.saturating_sub(len);
        }
        if r.committed() {
            self.committed = self.committed.saturating_sub(len);
            if !r.file {
                self.committed_anon = self.committed_anon.saturating_sub(len);
            }
        }
    }

    pub fn mapped_anon(&self) -> u64 {
        self.mapped - self.mapped_file
    }
}

/// V8's `MemoryChunk::kAlignment`: every heap chunk starts on it.
pub const V8_CHUNK_ALIGNMENT: u64 = 256 << 10;
/// glibc's `HEAP_MAX_SIZE` on 64-bit: one thread arena's reservation.
pub const GLIBC_ARENA_BYTES: u64 = 64 << 20;

/// See [`AddressSpace::committed_split`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommittedSplit {
    pub v8: u64,
    pub other: u64,
}

/// A live mapping, as reported in summaries: all pieces with one origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub start: u64,
    pub len: u64,
    pub committed: u64,
    pub file: bool,
    pub shared: bool,
}

#[derive(Clone, Debug)]
pub struct AddressSpace {
    map: RangeMap<u64, Region>,
    totals: Totals,
    page_size: u64,
}

impl AddressSpace {
    pub fn new(page_size: u64) -> Self {
        Self { map: RangeMap::new(), totals: Totals::default(), page_size: page_size.max(1) }
    }

    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// The kernel rounds every length up to whole pages.
    fn range(&self, start: u64, len: u64) -> Option<Range<u64>> {
        let len = len.checked_next_multiple_of(self.page_size)?;
        let end = start.checked_add(len)?;
        (len > 0).then_some(start..end)
    }

    /// A new mapping at `start` (mmap, or a piece found at attach). Replaces
    /// whatever was there, as MAP_FIXED does.
    pub fn map(&mut self, start: u64, len: u64, region: Region) {
        let Some(range) = self.range(start, len) else { return };
        self.clear(range.clone());
        self.totals.add(range.end - range.start, &region);
        self.map.insert(range, region);
    }

    /// munmap. Holes inside the range are fine, as for the kernel.
    pub fn unmap(&mut self, start: u64, len: u64) {
        if let Some(range) = self.range(start, len) {
            self.clear(range);
        }
    }

    /// mprotect: sets `prot` on the mapped pieces of the range.
    pub fn protect(&mut self, start: u64, len: u64, new_prot: u32) {
        let Some(range) = self.range(start, len) else { return };
        for (piece, old) in self.pieces(range) {
            let new = Region { prot: new_prot, ..old };
            let len = piece.end - piece.start;
            self.totals.sub(len, &old);
            self.totals.add(len, &new);
            self.map.insert(piece, new);
        }
    }

    /// mremap that succeeded and returned `new_start`.
    ///
    /// `keep_old` is MREMAP_DONTUNMAP: the old range stays mapped.
    pub fn remap(&mut self, old_start: u64, old_len: u64, new_start: u64, new_len: u64, keep_old: bool) {
        let Some(new_range) = self.range(new_start, new_len) else { return };
        let old_range = self.range(old_start, old_len);
        let old_pieces = old_range.clone().map(|r| self.pieces(r)).unwrap_or_default();
        // Attributes of growth: those of the last old piece. mremap requires
        // the old range to lie in one VMA, so the pieces differ at most by
        // origin. With nothing known (a race with the attach-time read), an
        // ordinary private anonymous read-write mapping is the safe guess.
        let grown = old_pieces.last().map(|(_, r)| *r).unwrap_or(Region {
            prot: prot::READ | prot::WRITE,
            file: false,
            shared: false,
            origin: new_start,
        });

        if new_start == old_start {
            // In place: shrink or grow the tail.
            let old_end = old_range.map_or(new_start, |r| r.end);
            if new_range.end < old_end {
                self.clear(new_range.end..old_end);
            } else if new_range.end > old_end {
                self.insert_piece(old_end..new_range.end, grown);
            }
            return;
        }
        // Moved: the old pages now live at new_start.
        if let Some(old_range) = old_range.filter(|_| !keep_old) {
            self.clear(old_range);
        }
        self.clear(new_range.clone());
        let mut covered = new_range.start;
        for (piece, r) in old_pieces {
            let start = piece.start - old_start + new_start;
            let end = (piece.end - old_start + new_start).min(new_range.end);
            if start >= end {
                continue;
            }
            self.insert_piece(start..end, Region { origin: new_start, ..r });
            covered = covered.max(end);
        }
        if covered < new_range.end {
            self.insert_piece(covered..new_range.end, Region { origin: new_start, ..grown });
        }
    }

    /// Live mappings grouped by the mapping that created them, largest first.
    pub fn chunks(&self) -> Vec<Chunk> {
        let mut by_origin: HashMap<u64, Chunk> = HashMap::new();
        for (range, r) in self.map.iter() {
            let len = range.end - range.start;
            let chunk = by_origin.entry(r.origin).or_insert(Chunk {
                start: range.start,
                len: 0,
                committed: 0,
                file: r.file,
                shared: r.shared,
            });
            chunk.start = chunk.start.min(range.start);
            chunk.len += len;
            if r.committed() {
                chunk.committed += len;
            }
        }
        let mut chunks: Vec<Chunk> = by_origin.into_values().collect();
        chunks.sort_by(|a, b| b.len.cmp(&a.len).then(a.start.cmp(&b.start)));
        chunks
    }

    /// Committed anonymous private memory, split into V8's heap chunks and
    /// the rest (malloc's mmap'd blocks and arenas, thread stacks, ...).
    ///
    /// V8 maps every heap chunk (a 256 KiB page, or one large object)
    /// aligned to 256 KiB, and nothing else in a process does so on
    /// purpose except glibc's thread arenas, which are 64 MiB reservations
    /// aligned to their size: those count as native. A mapping that is
    /// 256 KiB-aligned by chance (one in 64) is counted as V8's; that only
    /// offsets the figures, it does not make them grow.
    pub fn committed_split(&self) -> CommittedSplit {
        let mut split = CommittedSplit::default();
        for c in self.chunks() {
            if c.file || c.shared || c.committed == 0 {
                continue;
            }
            if c.start % V8_CHUNK_ALIGNMENT == 0 && c.len != GLIBC_ARENA_BYTES {
                split.v8 += c.committed;
            } else {
                split.other += c.committed;
            }
        }
        split
    }

    fn insert_piece(&mut self, range: Range<u64>, region: Region) {
        self.totals.add(range.end - range.start, &region);
        self.map.insert(range, region);
    }

    /// Removes everything in `range`, keeping the totals right.
    fn clear(&mut self, range: Range<u64>) {
        for (piece, r) in self.pieces(range.clone()) {
            self.totals.sub(piece.end - piece.start, &r);
        }
        self.map.remove(range);
    }

    /// The mapped pieces of `range`, clipped to it.
    fn pieces(&self, range: Range<u64>) -> Vec<(Range<u64>, Region)> {
        self.map
            .overlapping(&range)
            .map(|(r, v)| (r.start.max(range.start)..r.end.min(range.end), *v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 1024;
    const RW: u32 = prot::READ | prot::WRITE;

    fn anon(prot: u32, origin: u64) -> Region {
        Region { prot, file: false, shared: false, origin }
    }

    fn space() -> AddressSpace {
        AddressSpace::new(4 * K)
    }

    #[test]
    fn mmap_and_munmap_are_exact() {
        let mut s = space();
        s.map(0x10000, 64 * K, anon(RW, 0x10000));
        assert_eq!(s.totals().mapped, 64 * K);
        assert_eq!(s.totals().committed, 64 * K);
        s.unmap(0x10000, 64 * K);
        assert_eq!(s.totals(), Totals::default());
    }

    #[test]
    fn lengths_round_up_to_pages() {
        let mut s = space();
        s.map(0x10000, 100, anon(RW, 0x10000));
        assert_eq!(s.totals().mapped, 4 * K);
        s.unmap(0x10000, 1);
        assert_eq!(s.totals().mapped, 0);
    }

    #[test]
    fn v8_page_pattern_reserve_trim_commit_free() {
        // mmap 508 KiB PROT_NONE, munmap the 252 KiB slack, mprotect 256 KiB
        // read-write, later munmap the 256 KiB page.
        let mut s = space();
        let base = 0x7f00_0000_0000;
        s.map(base, 508 * K, anon(0, base));
        assert_eq!((s.totals().mapped, s.totals().committed), (508 * K, 0));
        s.unmap(base + 256 * K, 252 * K);
        assert_eq!((s.totals().mapped, s.totals().committed), (256 * K, 0));
        s.protect(base, 256 * K, RW);
        assert_eq!((s.totals().mapped, s.totals().committed), (256 * K, 256 * K));
        let chunks = s.chunks();
        assert_eq!(chunks.len(), 1);
        assert_eq!((chunks[0].len, chunks[0].committed), (256 * K, 256 * K));
        s.unmap(base, 256 * K);
        assert_eq!(s.totals(), Totals::default());
    }

    #[test]
    fn munmap_across_mappings_and_holes() {
        let mut s = space();
        s.map(0x100000, 8 * K, anon(RW, 0x100000));
        s.map(0x104000 + 16 * K, 8 * K, anon(0, 0x114000));
        s.unmap(0x0f0000, 1024 * K);
        assert_eq!(s.totals(), Totals::default());
    }

    #[test]
    fn mprotect_splits_and_only_touches_mapped_pieces() {
        let mut s = space();
        s.map(0x100000, 16 * K, anon(0, 0x100000));
        // Half of it, plus an unmapped stretch after it.
        s.protect(0x100000 + 8 * K, 64 * K, RW);
        assert_eq!((s.totals().mapped, s.totals().committed), (16 * K, 8 * K));
        // Back to PROT_NONE over everything.
        s.protect(0x100000, 16 * K, 0);
        assert_eq!(s.totals().committed, 0);
        // Read-only still counts as committed (only PROT_NONE is not).
        s.protect(0x100000, 4 * K, prot::READ);
        assert_eq!(s.totals().committed, 4 * K);
    }

    #[test]
    fn map_fixed_over_existing_replaces() {
        let mut s = space();
        s.map(0x100000, 16 * K, anon(RW, 0x100000));
        s.map(0x100000 + 4 * K, 4 * K, anon(0, 0x101000));
        assert_eq!((s.totals().mapped, s.totals().committed), (16 * K, 12 * K));
    }

    #[test]
    fn file_mappings_are_counted_apart() {
        let mut s = space();
        s.map(0x100000, 8 * K, Region { prot: prot::READ, file: true, shared: false, origin: 0x100000 });
        s.map(0x200000, 4 * K, anon(RW, 0x200000));
        let t = s.totals();
        assert_eq!(
            (t.mapped, t.mapped_file, t.mapped_anon(), t.committed_anon),
            (12 * K, 8 * K, 4 * K, 4 * K)
        );
    }

    #[test]
    fn mremap_grow_in_place_shrink_and_move() {
        let mut s = space();
        s.map(0x100000, 16 * K, anon(RW, 0x100000));
        s.remap(0x100000, 16 * K, 0x100000, 32 * K, false);
        assert_eq!(s.totals().committed, 32 * K);
        s.remap(0x100000, 32 * K, 0x100000, 8 * K, false);
        assert_eq!(s.totals().mapped, 8 * K);
        s.remap(0x100000, 8 * K, 0x900000, 24 * K, false);
        assert_eq!(s.totals().mapped, 24 * K);
        let chunks = s.chunks();
        assert_eq!(chunks.len(), 1);
        assert_eq!((chunks[0].start, chunks[0].len), (0x900000, 24 * K));
    }

    #[test]
    fn mremap_dontunmap_keeps_the_old_range() {
        let mut s = space();
        s.map(0x100000, 8 * K, anon(RW, 0x100000));
        s.remap(0x100000, 8 * K, 0x900000, 8 * K, true);
        assert_eq!(s.totals().mapped, 16 * K);
    }

    #[test]
    fn replaying_an_event_already_in_the_baseline_changes_nothing() {
        let mut s = space();
        s.map(0x100000, 8 * K, anon(RW, 0x100000));
        let before = s.totals();
        s.map(0x100000, 8 * K, anon(RW, 0x100000));
        s.unmap(0x500000, 8 * K);
        s.protect(0x100000, 8 * K, RW);
        assert_eq!(s.totals(), before);
    }

    #[test]
    fn adjacent_mappings_stay_separate_chunks() {
        let mut s = space();
        s.map(0x100000, 256 * K, anon(RW, 0x100000));
        s.map(0x100000 + 256 * K, 256 * K, anon(RW, 0x140000));
        assert_eq!(s.chunks().len(), 2);
    }

    #[test]
    fn overflowing_ranges_are_ignored_not_panics() {
        let mut s = space();
        s.map(u64::MAX - 10, 4 * K, anon(RW, 0));
        s.unmap(u64::MAX, u64::MAX);
        s.protect(0, u64::MAX, RW);
        assert_eq!(s.totals(), Totals::default());
    }
}
