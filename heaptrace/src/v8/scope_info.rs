//! A function's names and start position, from its `ScopeInfo` (what
//! `SharedFunctionInfo::name_or_scope_info` holds once the function is
//! compiled, which every function on a stack is).
//!
//! The metadata gives the fixed slots only; the variable part is laid out
//! by the flags (`src/objects/scope-info.tq`), which have no metadata. The
//! bits read here have not moved from V8 8.7 to 14.x:
//!
//! ```text
//! slots (8 bytes, from just after the map):
//!   0 flags (a Smi; V8 >= 13: a uint32 and padding)   1 parameter count
//!   2 context local count n                            [3 4 start end: V8 >= 12.8.44]
//!   first_vars: n local names (or 1 hash table when n >= 75), n local infos (Smis),
//!   [saved class variable: flags bit 10], [function name, slot: bits 12-13 != 0],
//!   [inferred name: bit 14], [start end: V8 < 12.8.44], ...
//! ```
//!
//! Nothing is guessed: each slot read must have the type the layout gives
//! it (Smis where Smis are, strings or their stand-ins where names are),
//! or the ScopeInfo is refused.

use super::{frames::Unnamed, heap::Heap, memory::Memory};

const SAVED_CLASS_VARIABLE: u32 = 1 << 10;
const FUNCTION_VARIABLE_SHIFT: u32 = 12;
const FUNCTION_VARIABLE_MASK: u32 = 3;
const INFERRED_NAME: u32 = 1 << 14;
/// Slots of fixed positions (V8 >= 12.8.44).
const FIXED_START: usize = 3;
/// Slots read in the first go: enough for a function with a few context
/// locals, in one system call.
const FIRST_READ: usize = 24;
/// More context locals than this is no ScopeInfo heaptrace believes.
const MAX_CONTEXT_LOCALS: i64 = 1 << 16;

/// What a ScopeInfo says of its function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScopeFacts {
    /// The function's name (`FunctionName()`), a tagged string, when it has one.
    pub name: Option<u64>,
    /// The name the parser inferred (`obj.method`, `handler`), a tagged string.
    pub inferred: Option<u64>,
    /// The function's start position (`StartPosition()`), in UTF-16 units.
    pub start: Option<u32>,
}

/// The slots of one ScopeInfo, read as far as needed.
struct Slots {
    base: u64,
    words: Vec<u64>,
}

impl Slots {
    fn get<M: Memory>(&mut self, heap: &mut Heap<M>, index: usize) -> Result<u64, Unnamed> {
        if index >= self.words.len() {
            // Doubling: a function with many context locals costs a few
            // reads, not one per eight slots; past the object's page, only
            // what is needed.
            let have = self.words.len();
            let (need, ahead) = (index + 1 - have, have.max(8));
            let at = self.base + 8 * have as u64;
            let words = heap.words(at, need.max(ahead)).or_else(|_| heap.words(at, need))?;
            self.words.extend(words);
        }
        Ok(self.words[index])
    }
}

/// Reads the ScopeInfo `tagged` points to (its type already checked).
pub fn read<M: Memory>(heap: &mut Heap<M>, tagged: u64) -> Result<ScopeFacts, Unnamed> {
    let layout = heap.postmortem().scope_info;
    let base = heap.untag(tagged) + heap.postmortem().offsets.heap_object_map + 8;
    // A generous first read can cross into an unmapped page at the end of
    // the heap's; the fixed slots alone cannot.
    let header = layout.first_vars as usize;
    let words = heap.words(base, FIRST_READ).or_else(|_| heap.words(base, header))?;
    let mut slots = Slots { base, words };

    let flags = flags(slots.get(heap, 0)?).ok_or(Unnamed::Unexpected("ScopeInfo flags"))?;
    let count = slots.get(heap, layout.context_local_count as usize)?;
    let count = heap.smi(count).filter(|n| (0..MAX_CONTEXT_LOCALS).contains(n));
    let count = count.ok_or(Unnamed::Unexpected("ScopeInfo context local count"))? as usize;
    let mut facts = ScopeFacts::default();
    if layout.fixed_positions {
        let (start, end) = (slots.get(heap, FIXED_START)?, slots.get(heap, FIXED_START + 1)?);
        facts.start = Some(positions(heap, start, end)?);
    }
    let function_variable = (flags >> FUNCTION_VARIABLE_SHIFT) & FUNCTION_VARIABLE_MASK != 0;
    let has_inferred = flags & INFERRED_NAME != 0;
    if !function_variable && !has_inferred && layout.fixed_positions {
        // Nothing else to read (and a module scope, whose variable part
        // starts with one more slot, needs none of it).
        return Ok(facts);
    }

    let mut i = header;
    let names_inline = if count < layout.max_inlined_local_names as usize {
        true
    } else {
        // Versions without the hash table keep every name inline.
        let first = slots.get(heap, i)?;
        heap.is_string(first)?
    };
    i += if names_inline { count } else { 1 };
    for local in 0..count {
        let info = slots.get(heap, i + local)?;
        if heap.smi(info).is_none() {
            return Err(Unnamed::Unexpected("ScopeInfo local infos"));
        }
    }
    i += count;
    if flags & SAVED_CLASS_VARIABLE != 0 {
        i += 1;
    }
    if function_variable {
        let (name, slot) = (slots.get(heap, i)?, slots.get(heap, i + 1)?);
        if heap.smi(slot).is_none() {
            return Err(Unnamed::Unexpected("ScopeInfo function variable"));
        }
        // A string, or Smi zero for none.
        if heap.smi(name) != Some(0) {
            if !heap.is_string(name)? {
                return Err(Unnamed::Unexpected("ScopeInfo function name"));
            }
            facts.name = Some(name);
        }
        i += 2;
    }
    if has_inferred {
        // A string, or undefined.
        let inferred = slots.get(heap, i)?;
        if !heap.is_heap_object(inferred) {
            return Err(Unnamed::Unexpected("ScopeInfo inferred name"));
        }
        if heap.is_string(inferred)? {
            facts.inferred = Some(inferred);
        }
        i += 1;
    }
    if !layout.fixed_positions {
        let (start, end) = (slots.get(heap, i)?, slots.get(heap, i + 1)?);
        facts.start = Some(positions(heap, start, end)?);
    }
    Ok(facts)
}

/// The flags, a Smi (value in the upper half) or, from V8 13, a uint32
/// followed by 4 bytes of padding. Flags are never all zero in a function's
/// ScopeInfo, so the two cannot be confused.
fn flags(word: u64) -> Option<u32> {
    let (high, low) = ((word >> 32) as u32, word as u32);
    match (high, low) {
        (h, 0) => Some(h),
        (0, l) => Some(l),
        _ => None,
    }
}

/// The start of a (start, end) pair of Smis with 0 <= start <= end.
fn positions<M: Memory>(heap: &Heap<M>, start: u64, end: u64) -> Result<u32, Unnamed> {
    match (heap.smi(start), heap.smi(end)) {
        (Some(s), Some(e)) if 0 <= s && s <= e && e <= i64::from(u32::MAX) => Ok(s as u32),
        _ => Err(Unnamed::Unexpected("ScopeInfo positions")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_a_smi_or_a_padded_uint32() {
        assert_eq!(flags(0x4242 << 32), Some(0x4242));
        assert_eq!(flags(0x4242), Some(0x4242));
        assert_eq!(flags(0x1_0000_4242), None);
    }
}
