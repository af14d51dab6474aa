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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::core::record::{DeathCause, DeathMemory, MemorySource};

    fn death() -> Death {
        Death {
            ts: 1_796_000_000.5,
            pid: 42,
            comm: "node".into(),
            cause: DeathCause::V8Oom,
            signal: Some("SIGABRT".into()),
            memory: DeathMemory {
                rss_anon_bytes: 1,
                rss_file_bytes: 2,
                rss_shmem_bytes: 0,
                vm_bytes: 3,
                source: MemorySource::Kernel,
                js_heap_used_bytes: Some(4),
                v8_heap_limit_bytes: None,
                v8_old_generation_limit_bytes: None,
                cgroup_usage_bytes: None,
                cgroup_limit_bytes: None,
            },
            verdict: None,
            allocation_sites: Vec::new(),
            heap: None,
            explanation: "V8 ran out of JS heap".into(),
            cgroup_path: String::new(),
            cgroup_id: 0,
            container: None,
            dump_path: None,
            flight: Some(Box::default()),
        }
    }

    #[test]
    fn one_file_per_death_root_only_never_over_another() {
        let dir = std::env::temp_dir().join(format!("heaptrace-dump-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = write(&dir, &death()).unwrap();
        assert_eq!(first, dir.join("heaptrace-42-1796000000.json"));
        assert_eq!(std::fs::metadata(&first).unwrap().permissions().mode() & 0o777, 0o600);
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&first).unwrap()).unwrap();
        assert_eq!((v["type"].as_str(), v["cause"].as_str()), (Some("death"), Some("v8-oom")));
        assert!(v["flight_recorder"]["gcs"].is_array());
        let second = write(&dir, &death()).unwrap();
        assert_eq!(second, dir.join("heaptrace-42-1796000000.1.json"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
