//! A script's name, and the line a position is on: from V8's own line ends
//! (`Script::line_ends`, computed the first time something asked V8 for a
//! line, e.g. a stack trace), else from the source read from the process,
//! with V8's rules for what ends a line.

use super::{frames::Unnamed, heap::Heap, memory::Memory};

/// The longest script source read to count lines (UTF-16 units, so at
/// most 32 MiB read): beyond, its functions are named without a line.
pub const MAX_SOURCE: usize = 16 << 20;
/// The most line ends taken from V8 (32 MiB of words).
const MAX_LINES: usize = 4 << 20;
/// The longest script name read.
pub const MAX_NAME: usize = 4096;

/// What is kept of one script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    /// The words it was read from (source, name, line ends): when they
    /// change, the address holds another script now.
    pub words: [u64; 3],
    /// `Script::name` (a path, `node:internal/…`, a URL), if a string.
    pub name: Option<String>,
    /// Where each line ends, once computed; `Err` once it failed.
    line_ends: Option<Result<Vec<u32>, Unnamed>>,
}

impl Script {
    /// Reads the script `tagged` points to (its type already checked).
    pub fn read<M: Memory>(heap: &mut Heap<M>, tagged: u64) -> Result<Self, Unnamed> {
        let words = header(heap, tagged)?;
        let name = if heap.is_string(words[1])? { Some(heap.string(words[1], MAX_NAME)?) } else { None };
        Ok(Script { words, name, line_ends: None })
    }

    /// The 1-based line `position` is on.
    pub fn line<M: Memory>(&mut self, heap: &mut Heap<M>, position: u32) -> Result<u32, Unnamed> {
        if self.line_ends.is_none() {
            self.line_ends = Some(line_ends(heap, self.words));
        }
        match &self.line_ends {
            Some(Ok(ends)) => Ok(line_of(ends, position)),
            Some(Err(e)) => Err(*e),
            None => Err(Unnamed::Unexpected("line ends")),
        }
    }
}

/// The script's source, name and line ends words, in one read.
pub fn header<M: Memory>(heap: &mut Heap<M>, tagged: u64) -> Result<[u64; 3], Unnamed> {
    let o = heap.postmortem().offsets;
    let fields = [o.script_source, o.script_name, o.script_line_ends];
    let (low, high) = (fields.iter().min().copied().unwrap_or(0), fields.iter().max().copied().unwrap_or(0));
    let words = heap.words(heap.untag(tagged) + low, ((high - low) / 8 + 1) as usize)?;
    let at = |offset: u64| words[((offset - low) / 8) as usize];
    Ok([at(o.script_source), at(o.script_name), at(o.script_line_ends)])
}

fn line_ends<M: Memory>(heap: &mut Heap<M>, [source, _, ends]: [u64; 3]) -> Result<Vec<u32>, Unnamed> {
    if heap.is_heap_object(ends) && heap.type_of(ends)? == heap.postmortem().types.fixed_array {
        return v8_line_ends(heap, ends);
    }
    if !heap.is_string(source)? {
        return Err(Unnamed::Unexpected("script source"));
    }
    Ok(compute_line_ends(&heap.string_units(source, MAX_SOURCE)?))
}

/// V8's line ends: a FixedArray of Smis.
fn v8_line_ends<M: Memory>(heap: &mut Heap<M>, tagged: u64) -> Result<Vec<u32>, Unnamed> {
    let o = heap.postmortem().offsets;
    let addr = heap.untag(tagged);
    let len = heap.words(addr + o.fixed_array_length, 1)?[0];
    let len = heap.smi(len).and_then(|n| usize::try_from(n).ok()).filter(|&n| n <= MAX_LINES);
    let len = len.ok_or(Unnamed::Unexpected("line ends length"))?;
    let words = heap.words(addr + o.fixed_array_data, len)?;
    let ends: Option<Vec<u32>> =
        words.iter().map(|&w| heap.smi(w).and_then(|v| u32::try_from(v).ok())).collect();
    ends.ok_or(Unnamed::Unexpected("line ends"))
}

/// What V8's `String::CalculateLineEnds` gives, with the ending line: the
/// position of every `\n`, lone `\r`, U+2028 and U+2029 (a `\r\n` ends at
/// its `\n`), then the source's length.
pub fn compute_line_ends(units: &[u16]) -> Vec<u32> {
    let mut ends = Vec::new();
    for (i, &c) in units.iter().enumerate() {
        let next = units.get(i + 1).copied().unwrap_or(0);
        let terminates = match c {
            0x0a | 0x2028 | 0x2029 => true,
            0x0d => next != 0x0a,
            _ => false,
        };
        if terminates {
            ends.push(i as u32);
        }
    }
    ends.push(units.len() as u32);
    ends
}

/// The 1-based line of `position` (V8's `Script::GetLineNumber` + 1): one
/// more than the line ends before it.
pub fn line_of(ends: &[u32], position: u32) -> u32 {
    ends.partition_point(|&e| e < position) as u32 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(s: &str) -> Vec<u16> {
        s.encode_utf16().collect()
    }

    #[test]
    fn lines_end_where_v8_says() {
        let src = units("a\nbc\r\nd\re\u{2028}f");
        let ends = compute_line_ends(&src);
        assert_eq!(ends, vec![1, 5, 7, 9, 11]);
        // Each character's line, as V8 numbers them from 1.
        let lines: Vec<u32> = (0..src.len() as u32).map(|p| line_of(&ends, p)).collect();
        assert_eq!(lines, vec![1, 1, 2, 2, 2, 2, 3, 3, 4, 4, 5]);
        assert_eq!(line_of(&compute_line_ends(&[]), 0), 1);
        assert_eq!(compute_line_ends(&units("x\n")), vec![1, 2]);
    }
}
