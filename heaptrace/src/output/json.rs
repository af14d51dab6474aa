//! JSON Lines: one object per record, tagged by `type`. The schema is
//! docs/json-output.md.

use std::io::{self, Write};

use super::Sink;
use crate::core::Record;

pub struct JsonSink<W: Write> {
    out: W,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn record(&mut self, record: &Record) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")?;
        // Line-buffered: a consumer (or a test) sees each record as it is made.
        self.out.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
