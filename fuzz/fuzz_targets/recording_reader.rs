//! Any bytes as a recording: refused with an error, or read and replayed
//! up to where they stop making sense; never a panic, never unbounded
//! memory (libFuzzer's -rss_limit_mb catches that).
#![no_main]

use std::io::{self, Cursor};

use heaptrace::{
    core::Record,
    output::Sink,
    recording::{reader::Reader, replay::replay},
};
use libfuzzer_sys::fuzz_target;

struct Discard;

impl Sink for Discard {
    fn record(&mut self, record: &Record) -> io::Result<()> {
        // Serialised as the JSON output would: that path must hold too.
        serde_json::to_vec(record).map(drop).map_err(io::Error::other)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(mut reader) = Reader::new(Cursor::new(data)) {
        let _ = replay(&mut reader, &mut Discard);
    }
});
