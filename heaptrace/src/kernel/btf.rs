//! Field offsets of kernel structures, from the kernel's BTF
//! (`/sys/kernel/btf/vmlinux`), for the programs that read the current
//! task's memory and exit status (heaptrace-ebpf/src/task.rs).
//!
//! aya's `Btf` parses the file but does not expose its types, so this reads
//! the format itself: only what finding a struct member needs (the header,
//! the type records and the string table). Members of anonymous structs and
//! unions are searched too (`mm_struct` keeps its fields in one).

use std::fs;

use heaptrace_common::{KernelOffsets, kernel_offsets};

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;

mod btf_kind {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

/// One type record, read where it lies in the blob.
#[derive(Clone, Copy, Debug)]
struct Type<'a> {
    name: u32,
    kind: u32,
    kind_flag: bool,
    vlen: usize,
    /// `size` for structs, unions, ints; the referenced type otherwise.
    size_or_type: u32,
    /// What follows the record (members, array data).
    trailing: &'a [u8],
}

impl Type<'_> {
    /// Struct and union members: (name, type, bit offset).
    fn members(&self) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
        (0..self.vlen).filter_map(|i| {
            let m = i * 12;
            Some((u32_at(self.trailing, m)?, u32_at(self.trailing, m + 4)?, u32_at(self.trailing, m + 8)?))
        })
    }

    /// Arrays: (element type, number of elements).
    fn array(&self) -> Option<(u32, u32)> {
        (self.kind == btf_kind::ARRAY)
            .then(|| Some((u32_at(self.trailing, 0)?, u32_at(self.trailing, 8)?)))
            .flatten()
    }
}

/// One BTF blob, read in place: only the start of each type record is
/// indexed (4 bytes per type), and records are decoded when asked for.
/// The kernel's BTF has over 100,000 types; decoding them all into owned
/// records cost the collector about 12 MiB of peak RSS, which malloc then
/// kept.
pub struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Byte offset of type id `i` in `types` (id 0, void, has none).
    offsets: Vec<u32>,
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

/// Bytes that follow a type record of `kind` with `vlen` entries.
fn trailing_len(kind: u32, vlen: usize) -> usize {
    match kind {
        btf_kind::INT | btf_kind::VAR | btf_kind::DECL_TAG => 4,
        btf_kind::ARRAY => 12,
        btf_kind::STRUCT | btf_kind::UNION | btf_kind::DATASEC | btf_kind::ENUM64 => vlen * 12,
        btf_kind::ENUM | btf_kind::FUNC_PROTO => vlen * 8,
        // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT,
        // TYPE_TAG: nothing.
        _ => 0,
    }
}

impl<'a> Btf<'a> {
    /// Indexes a little-endian BTF blob (the format of
    /// `/sys/kernel/btf/vmlinux` on x86_64).
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        if u16::from_le_bytes(data.get(0..2)?.try_into().ok()?) != BTF_MAGIC {
            return None;
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
        let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
        let types = data.get(hdr_len + type_off..hdr_len + type_off + type_len)?;
        let strings = data.get(hdr_len + str_off..hdr_len + str_off + str_len)?;
        let mut offsets = vec![0];
        let mut at = 0;
        while at < types.len() {
            let info = u32_at(types, at + 4)?;
            offsets.push(u32::try_from(at).ok()?);
            at += 12 + trailing_len((info >> 24) & 0x1f, (info & 0xffff) as usize);
        }
        Some(Self { types, strings, offsets })
    }

    fn ty(&self, id: u32) -> Option<Type<'a>> {
        if id == 0 {
            return None;
        }
        let at = *self.offsets.get(id as usize)? as usize;
        let info = u32_at(self.types, at + 4)?;
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        let trailing = self.types.get(at + 12..at + 12 + trailing_len(kind, vlen))?;
        Some(Type {
            name: u32_at(self.types, at)?,
            kind,
            kind_flag: info >> 31 != 0,
            vlen,
            size_or_type: u32_at(self.types, at + 8)?,
            trailing,
        })
    }

    fn name(&self, offset: u32) -> &'a str {
        let rest = self.strings.get(offset as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or_default()
    }

    /// The first struct of that name.
    fn struct_id(&self, name: &str) -> Option<u32> {
        (1..self.offsets.len() as u32).find(|&id| {
            self.ty(id)
                .is_some_and(|t| t.kind == btf_kind::STRUCT && t.name != 0 && self.name(t.name) == name)
        })
    }

    /// Skips typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<Type<'a>> {
        for _ in 0..32 {
            let t = self.ty(id)?;
            match t.kind {
                btf_kind::TYPEDEF
                | btf_kind::VOLATILE
                | btf_kind::CONST
                | btf_kind::RESTRICT
                | btf_kind::TYPE_TAG => id = t.size_or_type,
                _ => return Some(t),
            }
        }
        None
    }

    /// A named struct's size.
    pub fn struct_size(&self, name: &str) -> Option<u32> {
        Some(self.ty(self.struct_id(name)?)?.size_or_type)
    }

    /// Byte offset and type id of a member of a named struct, looking into
    /// anonymous struct and union members.
    pub fn member(&self, strukt: &str, field: &str) -> Option<(u32, u32)> {
        self.member_of(self.struct_id(strukt)?, field, 0)
    }

    fn member_of(&self, id: u32, field: &str, depth: u32) -> Option<(u32, u32)> {
        let t = self.resolve(id)?;
        if depth > 8 || !matches!(t.kind, btf_kind::STRUCT | btf_kind::UNION) {
            return None;
        }
        for (name, ty, offset) in t.members() {
            // With kind_flag, the top 8 bits are a bitfield's size.
            let bits = if t.kind_flag { offset & 0x00ff_ffff } else { offset };
            if name == 0 {
                if let Some((inner, ty)) = self.member_of(ty, field, depth + 1) {
                    return Some((bits / 8 + inner, ty));
                }
            } else if self.name(name) == field {
                return (bits % 8 == 0).then_some((bits / 8, ty));
            }
        }
        None
    }

    /// The name of a (resolved) struct type, and the (element type, count)
    /// of an array type.
    fn struct_name(&self, id: u32) -> Option<&'a str> {
        let t = self.resolve(id)?;
        (t.kind == btf_kind::STRUCT).then(|| self.name(t.name))
    }

    fn array_of(&self, id: u32) -> Option<(u32, u32)> {
        self.resolve(id)?.array()
    }

    /// Whether a type is a pointer (after typedefs).
    fn is_pointer(&self, id: u32) -> bool {
        self.resolve(id).is_some_and(|t| t.kind == btf_kind::PTR)
    }
}

/// The offsets the kernel programs need, from this kernel's BTF. Groups
/// not found are left out of `flags` (and the notes say why).
pub fn kernel_offsets(notes: &mut Vec<String>) -> KernelOffsets {
    let data = match fs::read(VMLINUX) {
        Ok(data) => data,
        Err(e) => {
            notes.push(format!(
                "kernel BTF unreadable ({VMLINUX}: {e}): memory at death comes from the last sample, exit status unknown"
            ));
            return KernelOffsets::NONE;
        }
    };
    let Some(btf) = Btf::parse(&data) else {
        notes.push(format!(
            "kernel BTF ({VMLINUX}) could not be parsed: memory at death comes from the last sample"
        ));
        return KernelOffsets::NONE;
    };
    let page_size = page_size();
    offsets_from(&btf, page_size, notes)
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

/// [`kernel_offsets`] on a parsed BTF (unit-tested).
pub fn offsets_from(btf: &Btf, page_size: u64, notes: &mut Vec<String>) -> KernelOffsets {
    let mut o = KernelOffsets { page_shift: page_size.trailing_zeros(), ..KernelOffsets::NONE };
    match memory_offsets(btf, &mut o) {
        Some(()) => o.flags |= kernel_offsets::MEMORY,
        None => notes.push(
            "task_struct/mm_struct RSS counters not found in the kernel's BTF: memory at death comes from the last sample"
                .into(),
        ),
    }
    match signal_offsets(btf, &mut o) {
        Some(()) => o.flags |= kernel_offsets::SIGNAL,
        None => notes.push(
            "task_struct/signal_struct exit fields not found in the kernel's BTF: exit statuses and fatal signals are not reported"
                .into(),
        ),
    }
    o
}

fn memory_offsets(btf: &Btf, o: &mut KernelOffsets) -> Option<()> {
    let (task_mm, mm_ty) = btf.member("task_struct", "mm")?;
    if !btf.is_pointer(mm_ty) {
        return None;
    }
    let (rss_stat, rss_ty) = btf.member("mm_struct", "rss_stat")?;
    let (total_vm, _) = btf.member("mm_struct", "total_vm")?;
    let (stride, count) = match btf.array_of(rss_ty) {
        // 6.2 and later: struct percpu_counter rss_stat[NR_MM_COUNTERS].
        Some((elem, n)) if n >= 4 && btf.struct_name(elem) == Some("percpu_counter") => {
            (btf.struct_size("percpu_counter")?, btf.member("percpu_counter", "count")?.0)
        }
        // Before: struct mm_rss_stat { atomic_long_t count[NR_MM_COUNTERS]; }.
        None if btf.struct_name(rss_ty) == Some("mm_rss_stat") => {
            let (count, count_ty) = btf.member("mm_rss_stat", "count")?;
            let (_, n) = btf.array_of(count_ty)?;
            if n < 4 {
                return None;
            }
            (8, count)
        }
        _ => return None,
    };
    o.task_mm = task_mm;
    o.mm_rss_stat = rss_stat;
    o.mm_total_vm = total_vm;
    o.rss_stride = stride;
    o.rss_count = count;
    Some(())
}

fn signal_offsets(btf: &Btf, o: &mut KernelOffsets) -> Option<()> {
    o.task_exit_code = btf.member("task_struct", "exit_code")?.0;
    o.task_signal = btf.member("task_struct", "signal")?.0;
    o.task_group_leader = btf.member("task_struct", "group_leader")?.0;
    o.signal_flags = btf.member("signal_struct", "flags")?.0;
    o.signal_group_exit_code = btf.member("signal_struct", "group_exit_code")?.0;
    // 5.19 and later; 0 (unknown) before.
    o.signal_group_exec_task = btf.member("signal_struct", "group_exec_task").map_or(0, |(off, _)| off);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob from (name, info, size_or_type, trailing words).
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Builder {
        fn new() -> Self {
            Self { types: Vec::new(), strings: vec![0] }
        }

        fn string(&mut self, s: &str) -> u32 {
            let at = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            at
        }

        fn add(&mut self, name: &str, kind: u32, vlen: u32, size_or_type: u32, trailing: &[u32]) {
            let name = if name.is_empty() { 0 } else { self.string(name) };
            for word in [name, (kind << 24) | vlen, size_or_type].iter().chain(trailing) {
                self.types.extend_from_slice(&word.to_le_bytes());
            }
        }

        fn strukt(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) {
            let mut words = Vec::new();
            for &(m, ty, byte_off) in members {
                words.extend([if m.is_empty() { 0 } else { self.string(m) }, ty, byte_off * 8]);
            }
            self.add(name, btf_kind::STRUCT, members.len() as u32, size, &words);
        }

        fn build(self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            for word in [24, 0, self.types.len() as u32, self.types.len() as u32, self.strings.len() as u32] {
                out.extend_from_slice(&word.to_le_bytes());
            }
            out.extend(self.types);
            out.extend(self.strings);
            out
        }
    }

    /// A miniature of 6.18's layout: mm_struct's fields in an anonymous
    /// struct, rss_stat an array of percpu_counter.
    fn kernel_like() -> Vec<u8> {
        let mut b = Builder::new();
        b.add("long", btf_kind::INT, 0, 8, &[64]); // 1
        b.add("", btf_kind::PTR, 0, 4, &[]); // 2: *mm_struct (4)
        b.strukt("percpu_counter", 40, &[("lock", 1, 0), ("count", 1, 8), ("counters", 1, 32)]); // 3
        b.strukt("mm_struct", 2000, &[("", 5, 0), ("cpu_bitmap", 1, 1990)]); // 4
        b.strukt("", 1990, &[("total_vm", 1, 200), ("rss_stat", 6, 800)]); // 5: anonymous
        b.add("", btf_kind::ARRAY, 0, 0, &[3, 1, 4]); // 6: percpu_counter[4]
        b.add("", btf_kind::PTR, 0, 10, &[]); // 7: *signal_struct
        b.add("", btf_kind::PTR, 0, 9, &[]); // 8: *task_struct
        b.strukt(
            "task_struct",
            9000,
            &[("mm", 2, 1000), ("exit_code", 1, 1100), ("signal", 7, 1800), ("group_leader", 8, 1200)],
        ); // 9
        b.strukt(
            "signal_struct",
            1000,
            &[("flags", 1, 16), ("group_exit_code", 1, 20), ("group_exec_task", 8, 24)],
        ); // 10
        b.build()
    }

    #[test]
    fn finds_members_through_anonymous_structs() {
        let data = kernel_like();
        let btf = Btf::parse(&data).unwrap();
        assert_eq!(btf.member("mm_struct", "total_vm").map(|m| m.0), Some(200));
        assert_eq!(btf.member("mm_struct", "rss_stat").map(|m| m.0), Some(800));
        assert_eq!(btf.member("mm_struct", "nope"), None);
        assert_eq!(btf.struct_size("percpu_counter"), Some(40));
        let mut notes = Vec::new();
        let o = offsets_from(&btf, 4096, &mut notes);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(o.flags, kernel_offsets::MEMORY | kernel_offsets::SIGNAL);
        assert_eq!(
            (o.page_shift, o.task_mm, o.mm_rss_stat, o.mm_total_vm, o.rss_stride, o.rss_count),
            (12, 1000, 800, 200, 40, 8)
        );
        assert_eq!((o.task_exit_code, o.task_signal, o.task_group_leader), (1100, 1800, 1200));
        assert_eq!((o.signal_flags, o.signal_group_exit_code, o.signal_group_exec_task), (16, 20, 24));
    }

    #[test]
    fn missing_structs_clear_their_group() {
        let mut b = Builder::new();
        b.add("long", btf_kind::INT, 0, 8, &[64]);
        b.strukt("task_struct", 100, &[("exit_code", 1, 8)]);
        let data = b.build();
        let btf = Btf::parse(&data).unwrap();
        let mut notes = Vec::new();
        let o = offsets_from(&btf, 4096, &mut notes);
        assert_eq!(o.flags, 0);
        assert_eq!(notes.len(), 2);
        assert!(Btf::parse(b"not btf at all").is_none());
    }

    #[test]
    fn this_kernels_btf_has_what_the_programs_need() {
        // The machines heaptrace is built and tested on have kernel BTF.
        let data = fs::read(VMLINUX).expect("read the kernel's BTF");
        let btf = Btf::parse(&data).expect("parse vmlinux BTF");
        let mut notes = Vec::new();
        let o = offsets_from(&btf, 4096, &mut notes);
        assert_eq!(o.flags, kernel_offsets::MEMORY | kernel_offsets::SIGNAL, "{notes:?}");
        assert!(o.task_mm > 0 && o.mm_rss_stat > 0 && o.rss_stride >= 8);
    }
}
