//! V8's postmortem metadata: the `v8dbg_*` symbols a Node build carries
//! (V8's `gen-postmortem-metadata.py`), whose values are the layout facts a
//! reader from outside needs to walk V8's heap: frame offsets, tagging,
//! instance types, and the offsets of class fields.
//!
//! Each symbol is a data symbol; its value is the int stored at its
//! address (in `.rodata`/`.data`, or `.bss` for a zero). They are looked up
//! in `.symtab` and `.dynsym`: V8's symbols are local from Node 24.11 on.
//!
//! Field symbols carry their C++ type (`v8dbg_class_Script__name__Object`,
//! `..._Tagged_Object_` from V8 11.x on), so fields are resolved by the
//! prefix `class_<Class>__<field>__`; some fields were renamed or dropped
//! between versions, and those have per-version fallbacks, each recorded in
//! [`Postmortem::fallbacks`]. The OpenTelemetry eBPF profiler
//! (`interpreter/nodev8/v8.go`) lists the gaps it knows; the ones that
//! matter for naming frames, measured on Node 18 to 26, are:
//!
//! - `FirstJSFunctionType`/`LastJSFunctionType` are missing before V8 11.x
//!   (Node 18, 20): JSFunction is a range of instance types (class, array,
//!   promise, regexp and typed-array constructors are subclasses), 16 types
//!   from `JS_FUNCTION_TYPE` on V8 10.2 and 11.3 (read from live objects:
//!   class constructors are the last, +15).
//! - `SharedFunctionInfo::script_or_debug_info` became `script` (V8 11.x).
//! - `ExternalString`'s cached data pointer has no symbol: it follows
//!   `resource`, in external strings that are not "uncached".
//! - `ScopeInfo`'s variable part has no metadata beyond the first index
//!   (see [`ScopeInfoLayout`]).

use std::{collections::HashMap, fmt, ops::RangeInclusive};

use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolSection};
use thiserror::Error;

/// The word at this offset from a frame's fp is what the kernel records as
/// [`crate::core::sites::RawFrame::function_slot`].
pub const KERNEL_FUNCTION_SLOT: i64 = -16;

/// Slots of a `ScopeInfo` with the local names inlined, at most (V8's
/// `kScopeInfoMaxInlinedLocalNamesSize`; more go to a hash table).
const MAX_INLINED_LOCAL_NAMES: u32 = 75;

/// V8's version, from `v8::internal::Version`'s static fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct V8Version {
    pub major: u32,
    pub minor: u32,
    pub build: u32,
    pub patch: u32,
}

impl V8Version {
    pub const fn new(major: u32, minor: u32, build: u32) -> Self {
        Self { major, minor, build, patch: 0 }
    }

    /// At least `major.minor.build` (whatever the patch).
    pub fn at_least(&self, major: u32, minor: u32, build: u32) -> bool {
        (self.major, self.minor, self.build) >= (major, minor, build)
    }
}

impl fmt::Display for V8Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}.{}", self.major, self.minor, self.build, self.patch)
    }
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PostmortemError {
    /// No `v8dbg_*` symbol at all: a stripped binary, or not V8.
    #[error("no V8 postmortem metadata (v8dbg_* symbols): stripped binary, or not V8")]
    NoMetadata,
    /// A constant naming needs is missing, and no fallback is known.
    #[error("V8 {version}: postmortem metadata lacks {what}")]
    Missing { version: V8Version, what: String },
    /// Two symbols for one field disagree.
    #[error("V8 {version}: postmortem metadata is ambiguous for {what}")]
    Ambiguous { version: V8Version, what: String },
    /// A layout heaptrace does not read (pointer compression, another
    /// tagging scheme, another frame layout).
    #[error("V8 {version}: {what}")]
    Unsupported { version: V8Version, what: String },
}

/// How V8 tags words: heap pointers and small integers (Smis).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tagging {
    pub heap_object_tag: u64,
    pub heap_object_tag_mask: u64,
    pub smi_tag: u64,
    pub smi_tag_mask: u64,
    /// A Smi's value is the word shifted right by this (32 without pointer
    /// compression).
    pub smi_shift: u32,
}

/// Instance types (`Map::instance_type`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceTypes {
    /// `JSFunction` and its subclasses.
    pub js_function: RangeInclusive<u16>,
    pub shared_function_info: u16,
    pub scope_info: u16,
    pub script: u16,
    pub fixed_array: u16,
    pub map: u16,
    /// Types below this are strings.
    pub first_nonstring: u16,
}

/// How a string's instance type says its representation and encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StringTags {
    pub representation_mask: u16,
    pub encoding_mask: u16,
    pub seq: u16,
    pub cons: u16,
    pub external: u16,
    pub sliced: u16,
    pub thin: u16,
    pub one_byte: u16,
    pub two_byte: u16,
    /// Set in external strings that keep no pointer to their characters.
    pub uncached_external_mask: u16,
}

/// Byte offsets of fields from an object's start (its untagged address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    pub heap_object_map: u64,
    pub map_instance_type: u64,
    pub js_function_shared: u64,
    pub sfi_name_or_scope_info: u64,
    /// `script` (V8 >= 11.x) or `script_or_debug_info`.
    pub sfi_script: u64,
    pub script_name: u64,
    pub script_source: u64,
    pub script_line_ends: u64,
    pub string_length: u64,
    pub seq_one_byte_chars: u64,
    pub seq_two_byte_chars: u64,
    pub cons_first: u64,
    pub cons_second: u64,
    pub sliced_parent: u64,
    pub sliced_offset: u64,
    pub thin_actual: u64,
    /// `ExternalString`'s cached pointer to its characters.
    pub external_resource_data: u64,
    pub fixed_array_length: u64,
    pub fixed_array_data: u64,
}

/// What is known of `ScopeInfo`, a `HeapObject` whose slots (8-byte words
/// from just after the map) are: flags, parameter count, context local
/// count, [V8 >= 12.8.44: start and end position], then a variable part
/// that only the flags describe (see `frames::scope_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScopeInfoLayout {
    /// Slot of the context local count (`scopeinfo_idx_ncontextlocals`).
    pub context_local_count: u32,
    /// First slot of the variable part (`scopeinfo_idx_first_vars`).
    pub first_vars: u32,
    /// The function's start and end positions are in slots 3 and 4 (V8 >=
    /// 12.8.44); before, they follow the names in the variable part.
    pub fixed_positions: bool,
    /// More context locals than this keep their names in a hash table.
    pub max_inlined_local_names: u32,
}

/// The metadata naming JS frames needs, for one V8 build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Postmortem {
    pub version: V8Version,
    /// Offset from fp of a JS frame's `JSFunction` (`off_fp_function`).
    pub fp_function: i64,
    /// Offset from fp of the context, or of a typed frame's marker.
    pub fp_context: i64,
    pub tagging: Tagging,
    pub types: InstanceTypes,
    pub strings: StringTags,
    pub offsets: Offsets,
    pub scope_info: ScopeInfoLayout,
    /// What came from a fallback rather than from a symbol, for people.
    pub fallbacks: Vec<&'static str>,
}

/// `v8::internal::Version::{major_,minor_,build_,patch_}`.
const VERSION_SYMBOLS: [&str; 4] = [
    "_ZN2v88internal7Version6major_E",
    "_ZN2v88internal7Version6minor_E",
    "_ZN2v88internal7Version6build_E",
    "_ZN2v88internal7Version6patch_E",
];

/// The values of one ELF file's `v8dbg_*` symbols (by name, without the
/// prefix) and of V8's version symbols.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Symbols {
    pub values: HashMap<String, i64>,
    pub version: [Option<u32>; 4],
}

impl Symbols {
    /// Collects them from an ELF file: `.symtab`, then `.dynsym`.
    pub fn read(file: &object::File<'_>) -> Self {
        let mut out = Symbols::default();
        for sym in file.symbols().chain(file.dynamic_symbols()) {
            out.offer(file, &sym);
        }
        out
    }

    /// Takes the symbol if it is one of the metadata's; the first seen of a
    /// name wins (the same symbol is often in both tables).
    pub fn offer<'d>(&mut self, file: &object::File<'d>, sym: &impl ObjectSymbol<'d>) {
        let Ok(name) = sym.name() else { return };
        if let Some(short) = name.strip_prefix("v8dbg_") {
            if !self.values.contains_key(short)
                && let Some(v) = symbol_value(file, sym)
            {
                self.values.insert(short.to_owned(), v);
            }
        } else if let Some(i) = VERSION_SYMBOLS.iter().position(|&v| v == name)
            && self.version[i].is_none()
        {
            self.version[i] = symbol_value(file, sym).and_then(|v| u32::try_from(v).ok());
        }
    }
}

/// The int a data symbol holds, read from its section (0 in `.bss`).
fn symbol_value<'d>(file: &object::File<'d>, sym: &impl ObjectSymbol<'d>) -> Option<i64> {
    let SymbolSection::Section(index) = sym.section() else { return None };
    let section = file.section_by_index(index).ok()?;
    let size = match sym.size() {
        0 => 4,
        n @ (1 | 2 | 4 | 8) => n,
        _ => return None,
    };
    if section.kind() == SectionKind::UninitializedData {
        return Some(0);
    }
    let bytes = section.data_range(sym.address(), size).ok()??;
    Some(match *bytes {
        [a] => i64::from(a as i8),
        [a, b] => i64::from(i16::from_le_bytes([a, b])),
        [a, b, c, d] => i64::from(i32::from_le_bytes([a, b, c, d])),
        _ => i64::from_le_bytes(bytes.try_into().ok()?),
    })
}

/// Resolves constants and fields, noting fallbacks.
struct Lookup<'a> {
    values: &'a HashMap<String, i64>,
    version: V8Version,
    fallbacks: Vec<&'static str>,
}

impl Lookup<'_> {
    fn missing(&self, what: impl Into<String>) -> PostmortemError {
        PostmortemError::Missing { version: self.version, what: what.into() }
    }

    fn constant(&self, name: &str) -> Option<i64> {
        self.values.get(name).copied()
    }

    fn require(&self, name: &str) -> Result<i64, PostmortemError> {
        self.constant(name).ok_or_else(|| self.missing(format!("v8dbg_{name}")))
    }

    /// A 16-bit type or tag constant.
    fn u16(&self, name: &str) -> Result<u16, PostmortemError> {
        let v = self.require(name)?;
        u16::try_from(v).map_err(|_| self.unsupported(format!("v8dbg_{name} = {v} is not a 16-bit value")))
    }

    fn unsupported(&self, what: impl Into<String>) -> PostmortemError {
        PostmortemError::Unsupported { version: self.version, what: what.into() }
    }

    /// The offset of `Class::field`, whatever type its symbol names; the
    /// first of `fields` that has a symbol.
    fn field(&self, class: &str, fields: &[&str]) -> Result<Option<u64>, PostmortemError> {
        for field in fields {
            let prefix = format!("class_{class}__{field}__");
            let mut found: Option<i64> = None;
            for (name, &v) in self.values {
                if name.starts_with(&prefix) {
                    if found.is_some_and(|f| f != v) {
                        return Err(PostmortemError::Ambiguous {
                            version: self.version,
                            what: format!("{class}::{field}"),
                        });
                    }
                    found = Some(v);
                }
            }
            if let Some(v) = found {
                let v = u64::try_from(v)
                    .map_err(|_| self.unsupported(format!("{class}::{field} at a negative offset")))?;
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    fn require_field(&self, class: &str, fields: &[&str]) -> Result<u64, PostmortemError> {
        self.field(class, fields)?.ok_or_else(|| self.missing(format!("{class}::{}", fields.join("|"))))
    }
}

impl Postmortem {
    /// Reads the metadata of an ELF file.
    pub fn read(file: &object::File<'_>) -> Result<Self, PostmortemError> {
        Self::from_symbols(&Symbols::read(file))
    }

    /// Parses collected symbol values (pure: the unit tests feed it).
    pub fn from_symbols(symbols: &Symbols) -> Result<Self, PostmortemError> {
        if symbols.values.is_empty() {
            return Err(PostmortemError::NoMetadata);
        }
        let [Some(major), Some(minor), Some(build), patch] = symbols.version else {
            return Err(PostmortemError::Missing {
                version: V8Version::default(),
                what: "V8's version (v8::internal::Version)".into(),
            });
        };
        let version = V8Version { major, minor, build, patch: patch.unwrap_or(0) };
        let mut l = Lookup { values: &symbols.values, version, fallbacks: Vec::new() };

        let fp_function = l.require("off_fp_function")?;
        let fp_context = l.require("off_fp_context")?;
        if fp_function != KERNEL_FUNCTION_SLOT {
            return Err(l.unsupported(format!(
                "a frame's JSFunction is at fp{fp_function:+}, not at fp{KERNEL_FUNCTION_SLOT:+} where the \
                 kernel reads it"
            )));
        }
        let tagging = tagging(&l)?;
        let types = instance_types(&mut l)?;
        let strings = string_tags(&mut l)?;
        let offsets = offsets(&mut l)?;
        let scope_info = scope_info_layout(&mut l)?;
        Ok(Postmortem {
            version,
            fp_function,
            fp_context,
            tagging,
            types,
            strings,
            offsets,
            scope_info,
            fallbacks: l.fallbacks,
        })
    }
}

/// Tagging, checked to be the one heaptrace reads: 8-byte tagged words
/// (no pointer compression), heap pointers tagged 01, Smis in the upper
/// half.
fn tagging(l: &Lookup<'_>) -> Result<Tagging, PostmortemError> {
    let tagged_size = l.require("TaggedSize")?;
    let pointer_size = l.constant("SystemPointerSize").unwrap_or(8);
    if tagged_size != 8 || pointer_size != 8 {
        return Err(l.unsupported(format!(
            "tagged values are {tagged_size} bytes (pointer compression): heaptrace reads builds \
             without it, such as the official Node builds"
        )));
    }
    let t = Tagging {
        heap_object_tag: l.require("HeapObjectTag")? as u64,
        heap_object_tag_mask: l.require("HeapObjectTagMask")? as u64,
        smi_tag: l.require("SmiTag")? as u64,
        smi_tag_mask: l.require("SmiTagMask")? as u64,
        smi_shift: u32::try_from(l.require("SmiShiftSize")? + l.require("SmiValueShift")?).unwrap_or(0),
    };
    let expected =
        Tagging { heap_object_tag: 1, heap_object_tag_mask: 3, smi_tag: 0, smi_tag_mask: 1, smi_shift: 32 };
    if t != expected {
        return Err(l.unsupported(format!("an unknown tagging scheme: {t:?}")));
    }
    Ok(t)
}

fn instance_types(l: &mut Lookup<'_>) -> Result<InstanceTypes, PostmortemError> {
    let js_function_type = l.u16("type_JSFunction__JS_FUNCTION_TYPE")?;
    let js_function = match (l.constant("FirstJSFunctionType"), l.constant("LastJSFunctionType")) {
        (Some(_), Some(_)) => {
            let (first, last) = (l.u16("FirstJSFunctionType")?, l.u16("LastJSFunctionType")?);
            if !(first..=last).contains(&js_function_type) {
                return Err(l.unsupported(format!("JS_FUNCTION_TYPE outside [{first}, {last}]")));
            }
            first..=last
        }
        _ if l.version.at_least(9, 6, 138) => {
            // The subclasses follow JS_FUNCTION_TYPE: 4 constructors of
            // classes, arrays, promises and regexps, and 11 of typed arrays.
            l.fallbacks.push("JSFunction types: JS_FUNCTION_TYPE and the 15 after it (V8 >= 9.6.138)");
            js_function_type..=js_function_type + 15
        }
        _ => {
            // Older layouts were not measured: only plain functions, which
            // loses constructors' frames but never names another object.
            l.fallbacks.push("JSFunction types: JS_FUNCTION_TYPE alone (V8 < 9.6.138)");
            js_function_type..=js_function_type
        }
    };
    Ok(InstanceTypes {
        js_function,
        shared_function_info: l.u16("type_SharedFunctionInfo__SHARED_FUNCTION_INFO_TYPE")?,
        scope_info: l.u16("type_ScopeInfo__SCOPE_INFO_TYPE")?,
        script: l.u16("type_Script__SCRIPT_TYPE")?,
        fixed_array: l.u16("type_FixedArray__FIXED_ARRAY_TYPE")?,
        map: l.u16("type_Map__MAP_TYPE")?,
        first_nonstring: l.u16("FirstNonstringType")?,
    })
}

fn string_tags(l: &mut Lookup<'_>) -> Result<StringTags, PostmortemError> {
    let tags = StringTags {
        representation_mask: l.u16("StringRepresentationMask")?,
        encoding_mask: l.u16("StringEncodingMask")?,
        seq: l.u16("SeqStringTag")?,
        cons: l.u16("ConsStringTag")?,
        external: l.u16("ExternalStringTag")?,
        sliced: l.u16("SlicedStringTag")?,
        thin: l.u16("ThinStringTag")?,
        one_byte: l.u16("OneByteStringTag")?,
        two_byte: l.u16("TwoByteStringTag")?,
        // V8's kUncachedExternalStringMask; no symbol in any version.
        uncached_external_mask: 0x10,
    };
    l.fallbacks.push("UncachedExternalStringMask = 0x10");
    // Where the uncached types have symbols (V8 >= 11.x), they say whether
    // the mask is right; a disagreement means the strings are not read.
    let uncached: Vec<u16> = l
        .values
        .iter()
        .filter(|(name, _)| name.starts_with("type_UncachedExternalString__"))
        .filter_map(|(_, &v)| u16::try_from(v).ok())
        .collect();
    let cached: Vec<u16> = l
        .values
        .iter()
        .filter(|(name, _)| name.starts_with("type_External") && name.contains("String__"))
        .filter_map(|(_, &v)| u16::try_from(v).ok())
        .collect();
    let mask = tags.uncached_external_mask;
    if uncached.iter().any(|t| t & mask == 0) || cached.iter().any(|t| t & mask != 0) {
        return Err(l.unsupported("external strings' types disagree with the uncached bit 0x10"));
    }
    Ok(tags)
}

fn offsets(l: &mut Lookup<'_>) -> Result<Offsets, PostmortemError> {
    let external_resource = l.require_field("ExternalString", &["resource"])?;
    l.fallbacks.push("ExternalString::resource_data = resource + 8");
    let script_name = l.require_field("Script", &["name"])?;
    let script_source = match l.field("Script", &["source"])? {
        Some(v) => v,
        None => {
            // At least back to V8 8.4 (the OpenTelemetry profiler's fallback).
            l.fallbacks.push("Script::source = name - 8");
            script_name.checked_sub(8).ok_or_else(|| l.missing("Script::source"))?
        }
    };
    let offsets = Offsets {
        heap_object_map: l.require_field("HeapObject", &["map"])?,
        map_instance_type: l.require_field("Map", &["instance_type"])?,
        js_function_shared: l.require_field("JSFunction", &["shared"])?,
        sfi_name_or_scope_info: l.require_field("SharedFunctionInfo", &["name_or_scope_info"])?,
        sfi_script: l.require_field("SharedFunctionInfo", &["script", "script_or_debug_info"])?,
        script_name,
        script_source,
        script_line_ends: l.require_field("Script", &["line_ends"])?,
        string_length: l.require_field("String", &["length"])?,
        seq_one_byte_chars: l.require_field("SeqOneByteString", &["chars"])?,
        seq_two_byte_chars: l.require_field("SeqTwoByteString", &["chars"])?,
        cons_first: l.require_field("ConsString", &["first"])?,
        cons_second: l.require_field("ConsString", &["second"])?,
        sliced_parent: l.require_field("SlicedString", &["parent"])?,
        sliced_offset: l.require_field("SlicedString", &["offset"])?,
        thin_actual: l.require_field("ThinString", &["actual"])?,
        external_resource_data: external_resource + 8,
        fixed_array_length: l.require_field("FixedArrayBase", &["length"])?,
        fixed_array_data: l.require_field("FixedArray", &["data"])?,
    };
    // Tagged fields are read as whole words.
    let o = &offsets;
    let tagged = [
        o.heap_object_map,
        o.js_function_shared,
        o.sfi_name_or_scope_info,
        o.sfi_script,
        o.script_name,
        o.script_source,
        o.script_line_ends,
        o.cons_first,
        o.cons_second,
        o.sliced_parent,
        o.sliced_offset,
        o.thin_actual,
        o.external_resource_data,
        o.fixed_array_length,
        o.fixed_array_data,
    ];
    if tagged.iter().any(|&offset| offset % 8 != 0 || offset > 4096) {
        return Err(l.unsupported(format!("tagged fields at offsets that are not whole words: {offsets:?}")));
    }
    Ok(offsets)
}

fn scope_info_layout(l: &mut Lookup<'_>) -> Result<ScopeInfoLayout, PostmortemError> {
    let index = |name: &str| -> Result<u32, PostmortemError> {
        let v = l.require(name)?;
        u32::try_from(v).ok().filter(|&v| v < 64).ok_or_else(|| l.unsupported(format!("v8dbg_{name} = {v}")))
    };
    let first_vars = index("scopeinfo_idx_first_vars")?;
    let context_local_count = index("scopeinfo_idx_ncontextlocals")?;
    // V8 12.8.44 moved the positions to slots 3 and 4, before the variable
    // part (https://chromium-review.googlesource.com/c/v8/v8/+/5627032).
    let fixed_positions = l.version.at_least(12, 8, 44);
    if fixed_positions && first_vars < 5 {
        return Err(
            l.unsupported(format!("ScopeInfo's variable part at slot {first_vars}, before its positions"))
        );
    }
    l.fallbacks.push(if fixed_positions {
        "ScopeInfo positions in slots 3 and 4 (V8 >= 12.8.44)"
    } else {
        "ScopeInfo positions after the function's names (V8 < 12.8.44)"
    });
    l.fallbacks
        .push("ScopeInfo flags: bit 10 saved class variable, 12-13 function variable, 14 inferred name");
    Ok(ScopeInfoLayout {
        context_local_count,
        first_vars,
        fixed_positions,
        max_inlined_local_names: MAX_INLINED_LOCAL_NAMES,
    })
}

#[cfg(test)]
#[path = "postmortem_tests.rs"]
pub(crate) mod tests;
