//! Any bytes as a recording: refused with an error, or read and replayed
//! up to where they stop making sense; never a panic, never unbounded
//! memory (libFuzzer's -rss_limit_mb catches that).
#![no_main]

use std::io::Cursor;

use heaptrace::{
    output::Discard,
    recording::{reader::Reader, replay::replay},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut reader) = Reader::new(Cursor::new(data)) {
        let _ = replay(&mut reader, &mut Discard);
    }
});
