//! Death dumps (`--dump-dir`): one JSON file per death, the `death` record
//! with the dead process's flight recording.

use std::{
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::core::record::{Death, FlightRecording, SCHEMA_VERSION};

#[derive(Serialize)]
struct DumpFile<'a> {
    schema_version: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    death: &'a Death,
    flight_recorder: Option<&'a FlightRecording>,
}

/// Writes `death`'s dump into `dir` as `heaptrace-<pid>-<unix seconds>.json`,
/// mode 0600, never over an existing file (a suffix is added instead).
pub fn write(dir: &Path, death: &Death) -> io::Result<PathBuf> {
    let stem = format!("heaptrace-{}-{}", death.pid, death.ts.max(0.0) as u64);
    let file = DumpFile {
        schema_version: SCHEMA_VERSION,
        kind: "death",
        death,
        flight_recorder: death.flight.as_deref(),
    };
    let bytes = serde_json::to_vec_pretty(&file)?;
    for n in 0..100 {
        let name = if n == 0 { format!("{stem}.json") } else { format!("{stem}.{n}.json") };
        let path = dir.join(name);
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
            Ok(mut f) => {
                f.write_all(&bytes)?;
                f.write_all(b"\n")?;
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{stem}.json and 99 more exist")))
}
