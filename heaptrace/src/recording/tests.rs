//! The format by hand: steps written and read back, cut at every byte, and
//! files that are not recordings. (The privileged tests/recording.rs
//! records real processes; fuzz/ feeds the reader garbage.)

use std::{
    io::{self, Cursor},
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use super::{reader::Reader, replay::replay, writer::RecordingWriter, *};
use crate::{
    core::{
        Event, EventKind, MemHook, MemOp, Model, ProcStatus, ProcessInfo, Record, Sample, input::CallCounts,
    },
    output::Sink,
};

const M: u64 = 1 << 20;
const SEC: u64 = 1_000_000_000;

fn model_config() -> ModelConfig {
    ModelConfig {
        page_size: 4096,
        large_threshold: M,
        wall_offset_ns: 0,
        mem_hook: MemHook::BtfTracepoint,
        group_all: false,
    }
}

/// A process attached, mapping and unmapping, sampled once a second for
/// `seconds`, with the interval's snapshots, then the summary.
fn steps(seconds: u64) -> Vec<Step> {
    let pid = 4242;
    let status = |rss_anon| ProcStatus { vm_size: 100 * M, rss_anon, rss_file: M, rss_shmem: 0 };
    let mut steps = vec![Step::Input(Input::Attach(Box::new(ProcessInfo {
        pid,
        comm: "node <script>".into(),
        ts_ns: SEC,
        status: status(10 * M),
        ..Default::default()
    })))];
    steps.push(Step::Start(crate::core::record::Started {
        ts: 1.0,
        schema_version: crate::core::record::SCHEMA_VERSION,
        selection: format!("--pid {pid}"),
        follows_new_processes: false,
        processes: 1,
        mem_hook: MemHook::BtfTracepoint,
    }));
    for s in 1..=seconds {
        let t = (s + 1) * SEC;
        let addr = 0x7f00_0000_0000 + s * 0x100_0000;
        let op = MemOp::Mmap { addr, len: 2 * M, prot: 3, flags: 0x22, fd: -1 };
        steps.push(Step::Input(Input::Event(Event {
            pid,
            tid: pid,
            ts_ns: t - SEC / 2,
            cgroup_id: 1,
            kind: EventKind::Mem { op, stack: None },
        })));
        steps.push(Step::Input(Input::Sample(Sample {
            pid,
            ts_ns: t,
            status: Some(status((10 + 2 * s) * M)),
            calls: CallCounts::default(),
            gc_work: None,
        })));
        steps.push(Step::Snapshots { now_ns: t });
        steps.push(Step::Tick(CollectorStats { now_ns: t, events: s, ..Default::default() }));
    }
    steps.push(Step::Summary { now_ns: (seconds + 2) * SEC });
    steps
}

/// What a sink is handed.
#[derive(Default)]
struct Collect(Vec<Record>, Vec<CollectorStats>);

impl Sink for Collect {
    fn record(&mut self, record: &Record) -> io::Result<()> {
        self.0.push(record.clone());
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn tick(&mut self, stats: &CollectorStats) {
        self.1.push(*stats);
    }
}

/// The records a live run makes from `steps` (as the collector does).
fn live(steps: &[Step]) -> Vec<Record> {
    let mut model = Model::new(model_config());
    let mut out = Vec::new();
    for step in steps.iter().cloned() {
        match step {
            Step::Start(s) => out.insert(0, Record::Start(s)),
            Step::Input(i) => model.apply(i, &mut out),
            Step::Snapshots { now_ns } => model.snapshots(now_ns, &mut out),
            Step::Tick(_) => {}
            Step::Summary { now_ns } => out.push(model.summary(now_ns)),
        }
    }
    out
}

fn temp_path(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("heaptrace-rec-test-{}-{tag}-{n}", std::process::id()))
}

/// `steps` written as the collector writes them: a chunk per second.
fn recording(steps: &[Step]) -> Vec<u8> {
    let path = temp_path("w");
    let header =
        Header { heaptrace_version: "test".into(), host: "here".into(), created: 1.0, model: model_config() };
    let mut w = RecordingWriter::create(&path, u64::MAX, &header).unwrap();
    for step in steps {
        w.step(step_ref(step));
        if matches!(step, Step::Tick(_)) {
            w.end_chunk();
        }
    }
    let written = w.finish();
    assert!(written.error.is_none() && !written.stopped_at_max);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(written.bytes, bytes.len() as u64);
    std::fs::remove_file(&path).unwrap();
    bytes
}

fn step_ref(step: &Step) -> StepRef<'_> {
    match step {
        Step::Start(s) => StepRef::Start(s),
        Step::Input(i) => StepRef::Input(i),
        Step::Snapshots { now_ns } => StepRef::Snapshots { now_ns: *now_ns },
        Step::Tick(t) => StepRef::Tick(t),
        Step::Summary { now_ns } => StepRef::Summary { now_ns: *now_ns },
    }
}

fn replayed(bytes: &[u8]) -> Result<(Collect, replay::Replayed, Option<reader::Cut>), RecordingError> {
    let mut reader = Reader::new(Cursor::new(bytes))?;
    let mut sink = Collect::default();
    let done = replay(&mut reader, &mut sink).unwrap();
    Ok((sink, done, reader.cut().cloned()))
}

#[test]
fn a_step_by_reference_is_written_as_the_step_reads() {
    for step in steps(2) {
        let by_ref = serde_json::to_string(&step_ref(&step)).unwrap();
        assert_eq!(by_ref, serde_json::to_string(&step).unwrap());
        assert_eq!(serde_json::from_str::<Step>(&by_ref).unwrap(), step);
    }
}

#[test]
fn a_replay_gives_the_records_of_the_live_run() {
    let steps = steps(20);
    let bytes = recording(&steps);
    let (sink, done, cut) = replayed(&bytes).unwrap();
    assert_eq!(cut, None);
    assert!(done.complete);
    assert_eq!(done.steps, steps.len() as u64);
    assert_eq!(sink.0, live(&steps));
    assert_eq!(sink.1.len(), 20, "every tick reaches the sink");
    assert!(sink.0.iter().any(|r| matches!(r, Record::Summary(_))));
}

#[test]
fn a_recording_is_readable_by_root_only() {
    use std::os::unix::fs::PermissionsExt;
    let path = temp_path("mode");
    std::fs::write(&path, b"old").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let header =
        Header { heaptrace_version: "t".into(), host: "h".into(), created: 0.0, model: model_config() };
    RecordingWriter::create(&path, u64::MAX, &header).unwrap().finish();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    std::fs::remove_file(&path).unwrap();
    assert_eq!(mode, 0o600);
}

/// Cut at every byte: an error while the header is incomplete, then every
/// complete chunk's steps and nothing of the incomplete one, with a cut
/// saying so; never a panic.
#[test]
fn a_recording_cut_anywhere_replays_up_to_its_last_complete_chunk() {
    let steps = steps(6);
    let bytes = recording(&steps);
    let header_end = {
        let r = Reader::new(Cursor::new(&bytes[..])).unwrap();
        r.position() as usize
    };
    let mut last_steps = 0;
    for cut_at in 0..bytes.len() {
        let part = &bytes[..cut_at];
        match replayed(part) {
            Err(e) => {
                assert!(cut_at < header_end, "cut at {cut_at}: {e}");
                let is_empty = cut_at == 0;
                assert_eq!(matches!(e, RecordingError::Empty), is_empty, "cut at {cut_at}: {e}");
            }
            Ok((sink, done, cut)) => {
                assert!(cut_at >= header_end);
                assert!(done.steps >= last_steps, "more bytes never give fewer steps");
                last_steps = done.steps;
                // Whole chunks end exactly at some cut points: no cut then.
                if let Some(cut) = &cut {
                    assert!(cut.at_byte as usize <= cut_at && cut.why.contains("incomplete"), "{cut}");
                }
                assert!(!done.complete);
                let expected = live(&steps[..done.steps as usize]);
                let got: Vec<_> =
                    sink.0.iter().filter(|r| !matches!(r, Record::Summary(_))).cloned().collect();
                let want: Vec<_> =
                    expected.into_iter().filter(|r| !matches!(r, Record::Summary(_))).collect();
                assert_eq!(got, want, "cut at {cut_at}");
            }
        }
    }
    assert!(last_steps > 0 && last_steps < steps.len() as u64);
}

#[test]
fn a_flipped_byte_ends_the_reading_at_its_chunk() {
    let steps = steps(4);
    let mut bytes = recording(&steps);
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    let (_, done, cut) = replayed(&bytes).unwrap();
    let cut = cut.expect("a cut");
    assert!(cut.why.contains("checksum"), "{cut}");
    assert!(!done.complete && done.steps < steps.len() as u64);
}

#[test]
fn files_that_are_not_recordings_are_refused_by_name() {
    let err = |bytes: &[u8]| Reader::new(Cursor::new(bytes)).err().expect("refused").to_string();
    assert!(err(b"").contains("empty"));
    assert!(err(b"{\"type\":\"start\"}\n").contains("not a heaptrace recording"));
    assert!(err(&[0u8; 4096]).contains("not a heaptrace recording"));
    let mut future = recording(&steps(1));
    future[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let e = err(&future);
    assert!(e.contains(&format!("version {}", FORMAT_VERSION + 1)) && e.contains("newer"), "{e}");
    assert!(err(&MAGIC[..]).contains("header"));
}

#[test]
fn record_max_stops_the_recording_at_a_chunk_boundary() {
    let steps = steps(30);
    let full = recording(&steps).len() as u64;
    let path = temp_path("max");
    let header =
        Header { heaptrace_version: "t".into(), host: "h".into(), created: 0.0, model: model_config() };
    let mut w = RecordingWriter::create(&path, full / 2, &header).unwrap();
    for step in &steps {
        w.step(step_ref(step));
        if matches!(step, Step::Tick(_)) {
            w.end_chunk();
        }
    }
    let written = w.finish();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(written.stopped_at_max);
    assert!(bytes.len() as u64 <= full / 2);
    let (sink, done, cut) = replayed(&bytes).unwrap();
    assert_eq!(cut, None, "stopped between chunks: nothing damaged");
    assert!(!done.complete && done.steps > 0);
    assert!(matches!(sink.0.last(), Some(Record::Summary(_))), "a summary at the last time");
}

/// The fuzzer's kept corpus (scripts/fuzz.sh), replayed on every test run
/// without cargo-fuzz: whatever it holds, no panic.
#[test]
fn the_fuzz_corpus_reads_without_a_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/recording_reader");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        if let Ok(mut reader) = Reader::new(Cursor::new(&bytes[..])) {
            replay(&mut reader, &mut Collect::default()).unwrap();
        }
        files += 1;
    }
    assert!(files > 0, "no corpus in {}", dir.display());
}

/// The steps fuzzer's corpus, each wrapped in valid chunks as the fuzz
/// target does: whatever the steps say, the model takes them without a
/// panic.
#[test]
fn the_steps_fuzz_corpus_replays_without_a_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/recording_steps");
    let header =
        Header { heaptrace_version: "t".into(), host: "h".into(), created: 0.0, model: model_config() };
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let steps = std::fs::read(entry.unwrap().path()).unwrap();
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let mut line = serde_json::to_vec(&header).unwrap();
        line.push(b'\n');
        file.extend_from_slice(&writer::chunk(&line).unwrap());
        file.extend_from_slice(&writer::chunk(&steps).unwrap());
        let mut reader = Reader::new(Cursor::new(file)).unwrap();
        replay(&mut reader, &mut Collect::default()).unwrap();
        files += 1;
    }
    assert!(files > 0, "no corpus in {}", dir.display());
}
