//! Any bytes as the steps of a well-formed recording: the chunk framing is
//! made valid around them (length, CRC, zlib), so that the fuzzer reaches
//! what a checksum otherwise keeps it from: the steps' parser and the
//! replay of arbitrary inputs through the model. Never a panic.
#![no_main]

use std::io::Cursor;

use heaptrace::{
    core::{MemHook, ModelConfig},
    output::Discard,
    recording::{FORMAT_VERSION, Header, MAGIC, reader::Reader, replay::replay, writer::chunk},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|steps: &[u8]| {
    let header = Header {
        heaptrace_version: "fuzz".into(),
        host: "fuzz".into(),
        created: 0.0,
        model: ModelConfig {
            page_size: 4096,
            large_threshold: 1 << 20,
            wall_offset_ns: 0,
            mem_hook: MemHook::BtfTracepoint,
            group_all: true,
        },
    };
    let mut file = MAGIC.to_vec();
    file.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let mut line = serde_json::to_vec(&header).unwrap();
    line.push(b'\n');
    file.extend_from_slice(&chunk(&line).unwrap());
    file.extend_from_slice(&chunk(steps).unwrap());
    let mut reader = Reader::new(Cursor::new(file)).expect("a valid header");
    let _ = replay(&mut reader, &mut Discard);
});
