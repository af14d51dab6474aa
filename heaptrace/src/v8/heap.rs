//! Reading V8's heap from outside, by the postmortem metadata: tagged
//! words, objects' instance types (through their maps), and strings in
//! every representation. Every object is checked for the type the layout
//! says it must have before a field of it is trusted; reads go through
//! [`Memory`], so the process is never stopped.
//!
//! Only builds without pointer compression are read (official Node builds):
//! a tagged word is a full 64-bit pointer + 1, or a Smi in the upper half.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use super::{frames::Unnamed, memory::Memory, postmortem::Postmortem};

/// Maps remembered per process, at most; past that the cache starts over.
const MAX_MAPS: usize = 4096;
/// Cons and sliced strings followed at most, nested.
const MAX_STRING_DEPTH: u32 = 32;

/// One string's header.
#[derive(Clone, Copy, Debug)]
struct StringHeader {
    /// Untagged address.
    addr: u64,
    ty: u16,
    len: usize,
}

/// A process's heap, as the metadata describes it, with the instance type
/// of every map seen (maps do not move in practice; each is checked once to
/// be a map).
pub struct Heap<M> {
    memory: M,
    pm: Arc<Postmortem>,
    map_types: HashMap<u64, u16>,
    meta_maps: HashSet<u64>,
    /// Reads made, for measurements.
    pub reads: u64,
}

impl<M: Memory> Heap<M> {
    pub fn new(memory: M, pm: Arc<Postmortem>) -> Self {
        Self { memory, pm, map_types: HashMap::new(), meta_maps: HashSet::new(), reads: 0 }
    }

    pub fn postmortem(&self) -> &Postmortem {
        &self.pm
    }

    /// Forgets the maps seen.
    pub fn clear(&mut self) {
        self.map_types.clear();
        self.meta_maps.clear();
    }

    pub fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Unnamed> {
        self.reads += 1;
        self.memory.read(addr, buf).map_err(|_| Unnamed::Unreadable)
    }

    /// `n` little-endian words from `addr`.
    pub fn words(&mut self, addr: u64, n: usize) -> Result<Vec<u64>, Unnamed> {
        let mut buf = vec![0u8; n * 8];
        self.read(addr, &mut buf)?;
        Ok(buf.as_chunks::<8>().0.iter().map(|&c| u64::from_le_bytes(c)).collect())
    }

    pub fn is_heap_object(&self, word: u64) -> bool {
        let t = &self.pm.tagging;
        word & t.heap_object_tag_mask == t.heap_object_tag && word > t.heap_object_tag_mask
    }

    /// The object's address, from its tagged pointer.
    pub fn untag(&self, word: u64) -> u64 {
        word & !self.pm.tagging.heap_object_tag_mask
    }

    /// A Smi's value; None for any other word (the lower half of a Smi is
    /// all zero without pointer compression).
    pub fn smi(&self, word: u64) -> Option<i64> {
        let t = &self.pm.tagging;
        let low_mask = (1u64 << t.smi_shift) - 1;
        (word & t.smi_tag_mask == t.smi_tag && word & low_mask == 0).then(|| (word as i64) >> t.smi_shift)
    }

    /// The instance type of the object `tagged` points to.
    pub fn type_of(&mut self, tagged: u64) -> Result<u16, Unnamed> {
        if !self.is_heap_object(tagged) {
            return Err(Unnamed::NotHeapObject);
        }
        let mut map = [0u8; 8];
        let at = self.untag(tagged) + self.pm.offsets.heap_object_map;
        self.read(at, &mut map)?;
        self.map_type(u64::from_le_bytes(map))
    }

    /// The instance type a map gives its objects. A map is checked once:
    /// its own map must be a meta map, a map of type MAP_TYPE whose map is
    /// itself. (There are several: one per native context, and the
    /// read-only roots' for maps of read-only objects such as
    /// SharedFunctionInfo's.)
    pub fn map_type(&mut self, map: u64) -> Result<u16, Unnamed> {
        if let Some(&t) = self.map_types.get(&map) {
            return Ok(t);
        }
        if !self.is_heap_object(map) {
            return Err(Unnamed::Unexpected("map"));
        }
        let (map_of_map, ty) = self.map_header(map)?;
        if !self.meta_maps.contains(&map_of_map) {
            let (meta_of_meta, meta_ty) = self.map_header(map_of_map)?;
            if meta_of_meta != map_of_map || meta_ty != self.pm.types.map {
                return Err(Unnamed::Unexpected("map"));
            }
            if self.meta_maps.len() >= MAX_MAPS {
                self.meta_maps.clear();
            }
            self.meta_maps.insert(map_of_map);
        }
        if self.map_types.len() >= MAX_MAPS {
            self.map_types.clear();
        }
        self.map_types.insert(map, ty);
        Ok(ty)
    }

    /// A map's own map word and its instance type field, in one read.
    fn map_header(&mut self, map: u64) -> Result<(u64, u16), Unnamed> {
        let o = &self.pm.offsets;
        let (map_at, type_at) = (o.heap_object_map as usize, o.map_instance_type as usize);
        let mut buf = vec![0u8; (map_at + 8).max(type_at + 2)];
        self.read(self.untag(map), &mut buf)?;
        let word = u64::from_le_bytes(buf[map_at..map_at + 8].try_into().unwrap_or_default());
        let ty = u16::from_le_bytes([buf[type_at], buf[type_at + 1]]);
        Ok((word, ty))
    }

    pub fn is_string_type(&self, ty: u16) -> bool {
        ty < self.pm.types.first_nonstring
    }

    /// Whether `word` points to a string.
    pub fn is_string(&mut self, word: u64) -> Result<bool, Unnamed> {
        Ok(self.is_heap_object(word) && { self.type_of(word).map(|t| self.is_string_type(t))? })
    }

    /// The string `tagged` points to, as UTF-16 code units (V8's positions
    /// count those), if it has at most `max` of them.
    pub fn string_units(&mut self, tagged: u64, max: usize) -> Result<Vec<u16>, Unnamed> {
        let h = self.string_header(tagged)?;
        if h.len > max {
            return Err(Unnamed::Unexpected("string too long"));
        }
        let mut out = Vec::with_capacity(h.len);
        self.append(h, 0, h.len, &mut out, 0)?;
        Ok(out)
    }

    /// The string `tagged` points to, as text (lossy for lone surrogates).
    pub fn string(&mut self, tagged: u64, max: usize) -> Result<String, Unnamed> {
        Ok(String::from_utf16_lossy(&self.string_units(tagged, max)?))
    }

    fn string_header(&mut self, tagged: u64) -> Result<StringHeader, Unnamed> {
        if !self.is_heap_object(tagged) {
            return Err(Unnamed::Unexpected("string"));
        }
        let o = self.pm.offsets;
        let (map_at, len_at) = (o.heap_object_map as usize, o.string_length as usize);
        let mut buf = vec![0u8; (map_at + 8).max(len_at + 4)];
        let addr = self.untag(tagged);
        self.read(addr, &mut buf)?;
        let map = u64::from_le_bytes(buf[map_at..map_at + 8].try_into().unwrap_or_default());
        let ty = self.map_type(map)?;
        if !self.is_string_type(ty) {
            return Err(Unnamed::Unexpected("string"));
        }
        let len = i32::from_le_bytes(buf[len_at..len_at + 4].try_into().unwrap_or_default());
        let len = usize::try_from(len).map_err(|_| Unnamed::Unexpected("string length"))?;
        Ok(StringHeader { addr, ty, len })
    }

    /// Appends code units `start..start + len` of the string `h`.
    fn append(
        &mut self,
        h: StringHeader,
        start: usize,
        len: usize,
        out: &mut Vec<u16>,
        depth: u32,
    ) -> Result<(), Unnamed> {
        if depth > MAX_STRING_DEPTH {
            return Err(Unnamed::Unexpected("string nested too deep"));
        }
        if start.checked_add(len).is_none_or(|end| end > h.len) {
            return Err(Unnamed::Unexpected("string bounds"));
        }
        if len == 0 {
            return Ok(());
        }
        let (o, s) = (self.pm.offsets, self.pm.strings);
        let one_byte = h.ty & s.encoding_mask == s.one_byte;
        let representation = h.ty & s.representation_mask;
        if representation == s.seq {
            let chars = if one_byte { o.seq_one_byte_chars } else { o.seq_two_byte_chars };
            self.chars(h.addr + chars, one_byte, start, len, out)
        } else if representation == s.external {
            if h.ty & s.uncached_external_mask != 0 {
                return Err(Unnamed::Unexpected("uncached external string"));
            }
            let data = self.words(h.addr + o.external_resource_data, 1)?[0];
            if data == 0 {
                return Err(Unnamed::Unexpected("external string without data"));
            }
            self.chars(data, one_byte, start, len, out)
        } else if representation == s.cons {
            let first = self.words(h.addr + o.cons_first, 1)?[0];
            let second = self.words(h.addr + o.cons_second, 1)?[0];
            let fh = self.string_header(first)?;
            let end = start + len;
            if start < fh.len {
                self.append(fh, start, end.min(fh.len) - start, out, depth + 1)?;
            }
            if end > fh.len {
                let sh = self.string_header(second)?;
                let from = start.max(fh.len) - fh.len;
                self.append(sh, from, end - fh.len - from, out, depth + 1)?;
            }
            Ok(())
        } else if representation == s.sliced {
            let parent = self.words(h.addr + o.sliced_parent, 1)?[0];
            let offset = self.words(h.addr + o.sliced_offset, 1)?[0];
            let offset = self.smi(offset).and_then(|v| usize::try_from(v).ok());
            let offset = offset.ok_or(Unnamed::Unexpected("sliced string offset"))?;
            let ph = self.string_header(parent)?;
            self.append(ph, start + offset, len, out, depth + 1)
        } else if representation == s.thin {
            let actual = self.words(h.addr + o.thin_actual, 1)?[0];
            let ah = self.string_header(actual)?;
            self.append(ah, start, len, out, depth + 1)
        } else {
            Err(Unnamed::Unexpected("string representation"))
        }
    }

    /// Reads `len` characters from `start` of a flat buffer at `addr`.
    fn chars(
        &mut self,
        addr: u64,
        one_byte: bool,
        start: usize,
        len: usize,
        out: &mut Vec<u16>,
    ) -> Result<(), Unnamed> {
        let width = if one_byte { 1 } else { 2 };
        let mut buf = vec![0u8; len * width];
        self.read(addr + (start * width) as u64, &mut buf)?;
        if one_byte {
            out.extend(buf.iter().map(|&b| u16::from(b)));
        } else {
            out.extend(buf.as_chunks::<2>().0.iter().map(|&c| u16::from_le_bytes(c)));
        }
        Ok(())
    }
}
