//! Parsing the metadata of real builds (their values, copied from the
//! binaries), per-version fallbacks, and what must be refused; and reading
//! symbol values from an ELF file (this test binary's own).

use super::*;

/// Node 18.20.8's `v8dbg_*` values that naming reads (and a neighbour).
pub const NODE_18: &[(&str, i64)] = &[
    ("ConsStringTag", 1),
    ("ExternalStringTag", 2),
    ("FirstNonstringType", 128),
    ("HeapObjectTag", 1),
    ("HeapObjectTagMask", 3),
    ("OneByteStringTag", 8),
    ("SeqStringTag", 0),
    ("SlicedStringTag", 3),
    ("SmiShiftSize", 31),
    ("SmiTag", 0),
    ("SmiTagMask", 1),
    ("SmiValueShift", 1),
    ("StringEncodingMask", 8),
    ("StringRepresentationMask", 7),
    ("SystemPointerSize", 8),
    ("TaggedSize", 8),
    ("ThinStringTag", 5),
    ("TwoByteStringTag", 0),
    ("class_ConsString__first__String", 16),
    ("class_ConsString__second__String", 24),
    ("class_ExternalString__resource__Object", 16),
    ("class_FixedArrayBase__length__SMI", 8),
    ("class_FixedArray__data__uintptr_t", 16),
    ("class_HeapObject__map__Map", 0),
    ("class_JSFunction__context__Context", 32),
    ("class_JSFunction__shared__SharedFunctionInfo", 24),
    ("class_Map__instance_type__uint16_t", 12),
    ("class_Script__line_ends__Object", 56),
    ("class_Script__name__Object", 16),
    ("class_Script__source__Object", 8),
    ("class_SeqOneByteString__chars__char", 16),
    ("class_SeqTwoByteString__chars__char", 16),
    ("class_SharedFunctionInfo__name_or_scope_info__Object", 16),
    ("class_SharedFunctionInfo__script_or_debug_info__HeapObject", 32),
    ("class_SlicedString__offset__SMI", 24),
    ("class_SlicedString__parent__String", 16),
    ("class_String__length__int32_t", 12),
    ("class_ThinString__actual__String", 16),
    ("off_fp_context", -8),
    ("off_fp_function", -16),
    ("scopeinfo_idx_first_vars", 3),
    ("scopeinfo_idx_ncontextlocals", 2),
    ("type_ExternalOneByteString__EXTERNAL_ONE_BYTE_STRING_TYPE", 42),
    ("type_ExternalTwoByteString__EXTERNAL_STRING_TYPE", 34),
    ("type_FixedArray__FIXED_ARRAY_TYPE", 179),
    ("type_JSFunction__JS_FUNCTION_TYPE", 2065),
    ("type_Map__MAP_TYPE", 250),
    ("type_ScopeInfo__SCOPE_INFO_TYPE", 256),
    ("type_Script__SCRIPT_TYPE", 170),
    ("type_SharedFunctionInfo__SHARED_FUNCTION_INFO_TYPE", 257),
];

/// Node 24.21.0's, likewise: types renamed `Tagged_…`, fields moved, the
/// JSFunction range and uncached string types present.
pub const NODE_24: &[(&str, i64)] = &[
    ("ConsStringTag", 1),
    ("ExternalStringTag", 2),
    ("FirstJSFunctionType", 2065),
    ("FirstNonstringType", 128),
    ("HeapObjectTag", 1),
    ("HeapObjectTagMask", 3),
    ("LastJSFunctionType", 2081),
    ("OneByteStringTag", 8),
    ("SeqStringTag", 0),
    ("SlicedStringTag", 3),
    ("SmiShiftSize", 31),
    ("SmiTag", 0),
    ("SmiTagMask", 1),
    ("SmiValueShift", 1),
    ("StringEncodingMask", 8),
    ("StringRepresentationMask", 7),
    ("SystemPointerSize", 8),
    ("TaggedSize", 8),
    ("ThinStringTag", 5),
    ("TwoByteStringTag", 0),
    ("class_ConsString__first__String", 16),
    ("class_ConsString__second__String", 24),
    ("class_ExternalString__resource__Object", 16),
    ("class_FixedArrayBase__length__SMI", 8),
    ("class_FixedArray__data__uintptr_t", 16),
    ("class_HeapObject__map__Map", 0),
    ("class_JSFunction__context__Context", 40),
    ("class_JSFunction__context__Tagged_Context_", 40),
    ("class_JSFunction__shared__SharedFunctionInfo", 32),
    ("class_Map__instance_type__uint16_t", 12),
    ("class_Script__line_ends__Object", 56),
    ("class_Script__name__Object", 16),
    ("class_Script__source__Object", 8),
    ("class_SeqOneByteString__chars__char", 16),
    ("class_SeqTwoByteString__chars__char", 16),
    ("class_SharedFunctionInfo__name_or_scope_info__Tagged_NameOrScopeInfoT_", 24),
    ("class_SharedFunctionInfo__raw_script__Tagged_Object_", 40),
    ("class_SharedFunctionInfo__script__Tagged_HeapObject_", 40),
    ("class_SlicedString__offset__SMI", 24),
    ("class_SlicedString__parent__String", 16),
    ("class_String__length__int32_t", 12),
    ("class_ThinString__actual__String", 16),
    ("off_fp_context", -8),
    ("off_fp_function", -16),
    ("scopeinfo_idx_first_vars", 5),
    ("scopeinfo_idx_ncontextlocals", 2),
    ("type_ExternalOneByteString__EXTERNAL_ONE_BYTE_STRING_TYPE", 42),
    ("type_ExternalTwoByteString__EXTERNAL_TWO_BYTE_STRING_TYPE", 34),
    ("type_FixedArray__FIXED_ARRAY_TYPE", 205),
    ("type_JSFunction__JS_FUNCTION_TYPE", 2065),
    ("type_Map__MAP_TYPE", 272),
    ("type_ScopeInfo__SCOPE_INFO_TYPE", 280),
    ("type_Script__SCRIPT_TYPE", 167),
    ("type_SharedFunctionInfo__SHARED_FUNCTION_INFO_TYPE", 282),
    ("type_UncachedExternalString__UNCACHED_EXTERNAL_ONE_BYTE_STRING_TYPE", 58),
    ("type_UncachedExternalString__UNCACHED_EXTERNAL_TWO_BYTE_STRING_TYPE", 50),
];

pub fn symbols(values: &[(&str, i64)], version: (u32, u32, u32, u32)) -> Symbols {
    Symbols {
        values: values.iter().map(|&(n, v)| (n.to_owned(), v)).collect(),
        version: [Some(version.0), Some(version.1), Some(version.2), Some(version.3)],
    }
}

pub fn node_18() -> Postmortem {
    Postmortem::from_symbols(&symbols(NODE_18, (10, 2, 154, 26))).unwrap()
}

pub fn node_24() -> Postmortem {
    Postmortem::from_symbols(&symbols(NODE_24, (13, 6, 233, 17))).unwrap()
}

#[test]
fn node_24_resolves_renamed_fields_by_prefix() {
    let p = node_24();
    assert_eq!(p.version.to_string(), "13.6.233.17");
    assert_eq!((p.fp_function, p.fp_context), (-16, -8));
    assert_eq!(p.types.js_function, 2065..=2081);
    assert_eq!((p.types.shared_function_info, p.types.scope_info, p.types.script), (282, 280, 167));
    let o = p.offsets;
    assert_eq!((o.js_function_shared, o.sfi_name_or_scope_info, o.sfi_script), (32, 24, 40));
    assert_eq!((o.script_source, o.script_name, o.script_line_ends), (8, 16, 56));
    assert_eq!(o.external_resource_data, 24);
    assert_eq!(p.scope_info.first_vars, 5);
    assert!(p.scope_info.fixed_positions);
    assert!(!p.fallbacks.iter().any(|f| f.starts_with("JSFunction")), "{:?}", p.fallbacks);
}

#[test]
fn node_18_gets_the_jsfunction_range_and_the_old_script_field() {
    let p = node_18();
    // 16 types: measured on V8 10.2 (class constructors are 2080).
    assert_eq!(p.types.js_function, 2065..=2080);
    assert!(p.fallbacks.iter().any(|f| f.starts_with("JSFunction types")), "{:?}", p.fallbacks);
    assert_eq!((p.offsets.js_function_shared, p.offsets.sfi_script), (24, 32));
    assert!(!p.scope_info.fixed_positions);
    // Before V8 9.6.138 only JS_FUNCTION_TYPE itself counts.
    let old = Postmortem::from_symbols(&symbols(NODE_18, (9, 4, 146, 0))).unwrap();
    assert_eq!(old.types.js_function, 2065..=2065);
}

#[test]
fn layouts_heaptrace_does_not_read_are_refused() {
    let with = |changes: &[(&str, Option<i64>)], version| {
        let mut s = symbols(NODE_24, version);
        for &(name, value) in changes {
            match value {
                Some(v) => s.values.insert(name.to_owned(), v),
                None => s.values.remove(name),
            };
        }
        Postmortem::from_symbols(&s)
    };
    let v = (13, 6, 233, 0);
    let unsupported =
        |r: Result<Postmortem, PostmortemError>| matches!(r, Err(PostmortemError::Unsupported { .. }));
    assert!(unsupported(with(&[("TaggedSize", Some(4))], v)), "pointer compression");
    assert!(unsupported(with(&[("off_fp_function", Some(-24))], v)));
    assert!(unsupported(with(&[("HeapObjectTag", Some(3))], v)));
    assert!(unsupported(with(&[("scopeinfo_idx_first_vars", Some(3))], v)), "fixed positions, no room");
    assert!(unsupported(with(&[("type_UncachedExternalString__X", Some(34))], v)));
    let missing = with(&[("class_JSFunction__shared__SharedFunctionInfo", None)], v).unwrap_err();
    assert_eq!(missing.to_string(), "V8 13.6.233.0: postmortem metadata lacks JSFunction::shared");
    let ambiguous = with(&[("class_Script__name__Tagged_Object_", Some(24))], v).unwrap_err();
    assert!(matches!(ambiguous, PostmortemError::Ambiguous { .. }), "{ambiguous}");
    // The same field under two type names, agreeing, is fine.
    assert!(with(&[("class_Script__name__Tagged_Object_", Some(16))], v).is_ok());
    // Script::source has the OpenTelemetry profiler's fallback.
    let p = with(&[("class_Script__source__Object", None)], v).unwrap();
    assert_eq!(p.offsets.script_source, 8);
    assert_eq!(Postmortem::from_symbols(&Symbols::default()), Err(PostmortemError::NoMetadata));
    let mut no_version = symbols(NODE_24, v);
    no_version.version = [None; 4];
    assert!(matches!(Postmortem::from_symbols(&no_version), Err(PostmortemError::Missing { .. })));
}

// Metadata-like symbols in this test binary: one with a value in .data,
// one zero in .bss, as V8's are.
// SAFETY: the names are unique (v8dbg_heaptrace_test_*): nothing else in
// the binary defines or links against them, and nothing reads them but
// the test, from the file.
#[used]
#[unsafe(no_mangle)]
static v8dbg_heaptrace_test_value: i32 = -16;
// SAFETY: as above; never accessed from Rust, so the `static mut` is never
// read or written.
#[used]
#[unsafe(no_mangle)]
static mut v8dbg_heaptrace_test_zero: i32 = 0;

#[test]
fn symbol_values_are_read_from_their_sections() {
    let data = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let s = Symbols::read(&file);
    assert_eq!(s.values.get("heaptrace_test_value"), Some(&-16));
    assert_eq!(s.values.get("heaptrace_test_zero"), Some(&0));
    assert_eq!(s.version, [None; 4]);
    // Too little to be V8's metadata.
    assert!(matches!(Postmortem::from_symbols(&s), Err(PostmortemError::Missing { .. })));
}
