//! Allocation sites as a pprof heap profile (gzip-compressed profile.proto),
//! for `go tool pprof`, Pyroscope, Grafana, Speedscope and the like.
//!
//! Each site is one sample with three values, named as Go's heap profiles
//! name them so tools treat the file as a heap profile:
//! `alloc_objects/count` (allocating calls), `alloc_space/bytes` and
//! `inuse_space/bytes`. The default is `inuse_space`: heaptrace is about
//! growth, and what is still held is what a leak hunt starts from; it is
//! also what Go heap profiles default to, so pprof users get what they
//! expect, and `-sample_index=alloc_space` shows the churn. It is listed
//! last, so tools that ignore `default_sample_type` and take the last type
//! land on it too.
//!
//! Every sample carries a `pid` (number) and a `process` (name) label, so
//! `-tagfocus pid=4242` picks one process out of a profile of many.

mod proto;

use std::{collections::HashMap, io::Write};

use flate2::{Compression, write::GzEncoder};
use prost::Message;

use super::sites_export::{ExportError, ProcessSites, frames_or_unknown};
use crate::core::sites::{AllocationSite, Frame, FrameKind};

/// The sample types, in the order of every sample's values.
pub const SAMPLE_TYPES: [(&str, &str); 3] =
    [("alloc_objects", "count"), ("alloc_space", "bytes"), ("inuse_space", "bytes")];

/// The sample type tools show unless told otherwise (see the module doc).
pub const DEFAULT_SAMPLE_TYPE: &str = "inuse_space";

/// What the profile says about when it was taken. Zero means unknown, as
/// in profile.proto.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProfileInfo {
    /// When tracing began, ns since the Unix epoch.
    pub start_unix_ns: i64,
    /// How long tracing ran, ns.
    pub duration_ns: i64,
}

/// The profile, serialized and gzip-compressed as pprof files are on disk.
/// The same sites, in any order, give the same bytes.
pub fn encode_gzipped(processes: &[ProcessSites<'_>], info: ProfileInfo) -> Result<Vec<u8>, ExportError> {
    let raw = build(processes, info).encode_to_vec();
    // GzEncoder writes a zero mtime, which keeps the output deterministic.
    let mut gz = GzEncoder::new(Vec::with_capacity(raw.len() / 4), Compression::default());
    gz.write_all(&raw).map_err(ExportError::Compress)?;
    gz.finish().map_err(ExportError::Compress)
}

/// The profile message: samples with their locations, functions and
/// mappings deduplicated, every string once in the string table.
fn build(processes: &[ProcessSites<'_>], info: ProfileInfo) -> proto::Profile {
    let mut b = Builder::default();
    b.profile.string_table.push(String::new()); // index 0 must be ""
    for (kind, unit) in SAMPLE_TYPES {
        let value_type = proto::ValueType { r#type: b.string(kind), unit: b.string(unit) };
        b.profile.sample_type.push(value_type);
    }
    b.profile.default_sample_type = b.string(DEFAULT_SAMPLE_TYPE);
    // Every allocation is counted, none sampled: a period of one byte.
    b.profile.period_type = Some(proto::ValueType { r#type: b.string("space"), unit: b.string("bytes") });
    b.profile.period = 1;
    b.profile.time_nanos = info.start_unix_ns;
    b.profile.duration_nanos = info.duration_ns;
    let comment = b.string("heaptrace: bytes mapped, committed or grown, by allocating stack");
    b.profile.comment.push(comment);

    // Sorted, so ids and the string table do not depend on input order.
    let mut processes: Vec<(&ProcessSites<'_>, Vec<&AllocationSite>)> = processes
        .iter()
        .map(|p| {
            let mut sites: Vec<&AllocationSite> = p.sites.iter().collect();
            sites.sort_by(|a, b| {
                (&a.frames, a.bytes, a.live_bytes, a.count).cmp(&(&b.frames, b.bytes, b.live_bytes, b.count))
            });
            (p, sites)
        })
        .collect();
    processes.sort_by_key(|(p, _)| (p.pid, p.name));

    // pprof takes the first mapping for the main binary (`-top` heads its
    // output with it as "File:"). For node that is the binary V8's builtins
    // are embedded in, so one of theirs goes first.
    let all_frames = processes.iter().flat_map(|(_, sites)| sites.iter().flat_map(|s| &s.frames));
    if let Some(main) = all_frames.filter(|f| f.kind == FrameKind::Builtin).find(|f| f.file.is_some()) {
        b.mapping(main);
    }

    let (pid_key, process_key) = (b.string("pid"), b.string("process"));
    for (process, sites) in processes {
        let name = b.string(process.name);
        let labels = vec![
            proto::Label { key: pid_key, num: i64::from(process.pid), ..Default::default() },
            proto::Label { key: process_key, str: name, ..Default::default() },
        ];
        for site in sites {
            let value =
                [site.count, site.bytes, site.live_bytes].map(|v| i64::try_from(v).unwrap_or(i64::MAX));
            if value == [0; 3] {
                continue;
            }
            // pprof, like AllocationSite, lists the leaf first.
            let location_id = frames_or_unknown(site).iter().map(|f| b.location(f)).collect();
            b.profile.sample.push(proto::Sample {
                location_id,
                value: value.to_vec(),
                label: labels.clone(),
            });
        }
    }
    b.profile
}

/// Interns strings, functions, mappings and locations as samples need them.
/// Ids are 1-based positions in their tables (0 means "none" in the proto).
#[derive(Default)]
struct Builder {
    profile: proto::Profile,
    strings: HashMap<String, i64>,
    /// (name, filename, start line) → function id.
    functions: HashMap<(i64, i64, i64), u64>,
    /// (filename, build id) → mapping id.
    mappings: HashMap<(i64, i64), u64>,
    /// (function id, line, mapping id) → location id.
    locations: HashMap<(u64, i64, u64), u64>,
}

impl Builder {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(&index) = self.strings.get(s) {
            return index;
        }
        let index = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), index);
        index
    }

    fn location(&mut self, frame: &Frame) -> u64 {
        let function_id = self.function(frame);
        let line = frame.line.map_or(0, i64::from);
        let mapping_id = self.mapping(frame);
        let next = self.profile.location.len() as u64 + 1;
        let id = *self.locations.entry((function_id, line, mapping_id)).or_insert(next);
        if id == next {
            // No address: a frame reaches here named, not as a pc to resolve.
            let lines = vec![proto::Line { function_id, line }];
            self.profile.location.push(proto::Location { id, mapping_id, line: lines, ..Default::default() });
        }
        id
    }

    fn function(&mut self, frame: &Frame) -> u64 {
        let name = self.string(&frame.function);
        // A JS frame's file is its script, the function's source. A native
        // frame's file is the binary, which belongs in the mapping.
        let filename = match (&frame.file, frame.kind) {
            (Some(file), FrameKind::Js) => self.string(file),
            _ => 0,
        };
        let start_line = frame.line.map_or(0, i64::from);
        let next = self.profile.function.len() as u64 + 1;
        let id = *self.functions.entry((name, filename, start_line)).or_insert(next);
        if id == next {
            let function = proto::Function { id, name, system_name: name, filename, start_line };
            self.profile.function.push(function);
        }
        id
    }

    /// The binary a native or builtin frame is in, with its build-id, so a
    /// frame named only by an offset can be named later against the
    /// unstripped build. 0 (none) for JS and kernel frames.
    fn mapping(&mut self, frame: &Frame) -> u64 {
        let file = match (&frame.file, frame.kind) {
            (Some(file), FrameKind::Native | FrameKind::Builtin) => file,
            _ => return 0,
        };
        let filename = self.string(file);
        let build_id = frame.build_id.as_deref().map_or(0, |id| self.string(id));
        let next = self.profile.mapping.len() as u64 + 1;
        let id = *self.mappings.entry((filename, build_id)).or_insert(next);
        if id == next {
            // has_functions: the frames are named already (or named as well
            // as they can be, by offset), and there are no addresses to
            // symbolize, so pprof must not try.
            let mapping =
                proto::Mapping { id, filename, build_id, has_functions: true, ..Default::default() };
            self.profile.mapping.push(mapping);
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use flate2::read::GzDecoder;
    use std::io::Read;

    use super::*;

    fn frame(function: &str, kind: FrameKind, file: Option<&str>, line: Option<u32>) -> Frame {
        Frame { function: function.into(), file: file.map(Into::into), line, kind, build_id: None }
    }

    fn sites() -> Vec<AllocationSite> {
        let node = Some("/usr/bin/node");
        let grow = vec![
            frame("v8::internal::Heap::AllocateRaw", FrameKind::Native, node, None),
            frame("Builtins_ArrayConstructor", FrameKind::Builtin, node, None),
            frame("handler", FrameKind::Js, Some("/srv/app/app.js"), Some(17)),
        ];
        let mut stripped = frame("0x1a2b", FrameKind::Native, Some("/opt/addon.node"), None);
        stripped.build_id = Some("abcd1234".into());
        vec![
            AllocationSite {
                bytes: 3 << 20,
                live_bytes: 1 << 20,
                live_v8_bytes: 0,
                count: 12,
                frames: grow.clone(),
            },
            AllocationSite {
                bytes: 4096,
                live_bytes: 0,
                live_v8_bytes: 0,
                count: 1,
                frames: vec![stripped, grow[2].clone()],
            },
            AllocationSite { bytes: 0, live_bytes: 0, live_v8_bytes: 0, count: 0, frames: grow },
            AllocationSite { bytes: 64, live_bytes: 64, live_v8_bytes: 0, count: 1, frames: vec![] },
        ]
    }

    fn decode(bytes: &[u8]) -> proto::Profile {
        let mut raw = Vec::new();
        GzDecoder::new(bytes).read_to_end(&mut raw).unwrap();
        proto::Profile::decode(raw.as_slice()).unwrap()
    }

    /// The sample's stack as `name@file:line`, leaf first.
    fn stack(p: &proto::Profile, sample: &proto::Sample) -> Vec<String> {
        let s = |i: i64| p.string_table[i as usize].clone();
        let stack = sample.location_id.iter().map(|&id| {
            let location = &p.location[id as usize - 1];
            assert_eq!(location.id, id);
            let function = &p.function[location.line[0].function_id as usize - 1];
            format!("{}@{}:{}", s(function.name), s(function.filename), location.line[0].line)
        });
        stack.collect()
    }

    #[test]
    fn roundtrip() {
        let sites = sites();
        let p = decode(
            &encode_gzipped(
                &[ProcessSites { pid: 4242, name: "node", sites: &sites }],
                ProfileInfo::default(),
            )
            .unwrap(),
        );
        let s = |i: i64| p.string_table[i as usize].as_str();

        assert_eq!(p.string_table[0], "");
        let types: Vec<(&str, &str)> = p.sample_type.iter().map(|t| (s(t.r#type), s(t.unit))).collect();
        assert_eq!(types, SAMPLE_TYPES);
        assert_eq!(s(p.default_sample_type), "inuse_space");

        // The site that allocated nothing is left out; sorted by stack (the
        // stackless site first, under its `[unknown]` frame).
        let samples: Vec<(Vec<String>, Vec<i64>)> =
            p.sample.iter().map(|x| (stack(&p, x), x.value.clone())).collect();
        assert_eq!(
            samples,
            [
                (vec!["[unknown]@:0".to_string()], vec![1, 64, 64]),
                (vec!["0x1a2b@:0".to_string(), "handler@/srv/app/app.js:17".into()], vec![1, 4096, 0]),
                (
                    vec![
                        "v8::internal::Heap::AllocateRaw@:0".to_string(),
                        "Builtins_ArrayConstructor@:0".into(),
                        "handler@/srv/app/app.js:17".into(),
                    ],
                    vec![12, 3 << 20, 1 << 20],
                ),
            ]
        );
        // `handler` is one location and one function, shared by two samples.
        assert_eq!(p.function.iter().filter(|f| s(f.name) == "handler").count(), 1);
        assert_eq!(p.location.len(), 5);
        assert_eq!(p.function.iter().find(|f| s(f.name) == "handler").unwrap().start_line, 17);

        // Native frames sit in their binary's mapping, with its build-id.
        let mappings: Vec<(&str, &str)> = p.mapping.iter().map(|m| (s(m.filename), s(m.build_id))).collect();
        // node first: pprof takes the first mapping for the main binary.
        assert_eq!(mappings, [("/usr/bin/node", ""), ("/opt/addon.node", "abcd1234")]);
        assert!(p.mapping.iter().all(|m| m.has_functions));

        for sample in &p.sample {
            let labels: Vec<(&str, &str, i64)> =
                sample.label.iter().map(|l| (s(l.key), s(l.str), l.num)).collect();
            assert_eq!(labels, [("pid", "", 4242), ("process", "node", 0)]);
        }
    }

    #[test]
    fn strings_are_stored_once() {
        let sites = sites();
        let p = build(&[ProcessSites { pid: 1, name: "node", sites: &sites }], ProfileInfo::default());
        let mut table = p.string_table.clone();
        table.sort();
        table.dedup();
        assert_eq!(table.len(), p.string_table.len());
    }

    #[test]
    fn output_does_not_depend_on_input_order() {
        let (a, mut b) = (sites(), sites());
        b.reverse();
        let info = ProfileInfo { start_unix_ns: 1_700_000_000_000_000_000, duration_ns: 5_000_000_000 };
        let one = encode_gzipped(
            &[
                ProcessSites { pid: 1, name: "node", sites: &a },
                ProcessSites { pid: 2, name: "w", sites: &b },
            ],
            info,
        );
        let two = encode_gzipped(
            &[
                ProcessSites { pid: 2, name: "w", sites: &a },
                ProcessSites { pid: 1, name: "node", sites: &b },
            ],
            info,
        );
        assert_eq!(one.unwrap(), two.unwrap());
    }

    #[test]
    fn huge_and_empty_inputs_do_not_panic() {
        let huge = vec![AllocationSite {
            bytes: u64::MAX,
            live_bytes: u64::MAX,
            live_v8_bytes: 0,
            count: u64::MAX,
            frames: vec![],
        }];
        let p = decode(
            &encode_gzipped(&[ProcessSites { pid: 1, name: "", sites: &huge }], ProfileInfo::default())
                .unwrap(),
        );
        assert_eq!(p.sample[0].value, [i64::MAX; 3]);
        let empty = decode(&encode_gzipped(&[], ProfileInfo::default()).unwrap());
        assert!(empty.sample.is_empty());
    }
}
