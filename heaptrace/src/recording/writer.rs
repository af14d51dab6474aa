//! Writes a recording while tracing. The collector serialises each step
//! into a buffer (cheap, no I/O); at the end of every interval the buffer
//! goes, as one chunk, to a thread that compresses it and appends it to
//! the file. A slow or full disk therefore never stalls the collector
//! (unless sixteen chunks are waiting), and what reached the file is always
//! whole chunks.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, SyncSender, sync_channel},
    },
    thread::JoinHandle,
};

use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compression, write::ZlibEncoder};

use super::{FORMAT_VERSION, Header, MAGIC, StepRef};
use crate::units::fmt_bytes;

/// A chunk is sent early when its steps reach this size (a busy interval).
const CHUNK_BYTES: usize = 1 << 20;
/// Chunks waiting for the writer thread before the collector waits.
const QUEUE: usize = 16;

/// What was written, for the end of the run.
#[derive(Debug, Default)]
pub struct Written {
    pub path: PathBuf,
    /// Bytes in the file.
    pub bytes: u64,
    /// Step chunks written (the header's not counted).
    pub chunks: u64,
    /// `--record-max` was reached and recording stopped there.
    pub stopped_at_max: bool,
    /// Writing failed (the file holds what was written before).
    pub error: Option<String>,
}

/// The collector's side of a recording.
pub struct RecordingWriter {
    pending: BytesMut,
    tx: Option<SyncSender<Bytes>>,
    thread: Option<JoinHandle<Written>>,
    /// Set by the writer thread when it stops writing (the limit, an
    /// error): steps are no longer serialised.
    stopped: Arc<AtomicBool>,
}

impl RecordingWriter {
    /// Creates (or truncates) `path`, readable by root only (mode 0600:
    /// a recording holds process names, paths and JS function names), and
    /// writes its header; later chunks are written by a thread of its own.
    pub fn create(path: &Path, max_bytes: u64, header: &Header) -> io::Result<Self> {
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
        // An existing file keeps its mode through O_TRUNC.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let mut line = serde_json::to_vec(header).map_err(io::Error::other)?;
        line.push(b'\n');
        head.extend_from_slice(&chunk(&line)?);
        if head.len() as u64 > max_bytes {
            return Err(io::Error::other(format!(
                "--record-max {} is smaller than the recording's header ({} bytes)",
                fmt_bytes(max_bytes as f64),
                head.len()
            )));
        }
        file.write_all(&head)?;
        let (tx, rx) = sync_channel(QUEUE);
        let stopped = Arc::new(AtomicBool::new(false));
        let state = Written { path: path.to_path_buf(), bytes: head.len() as u64, ..Written::default() };
        let thread_stopped = stopped.clone();
        let thread = std::thread::Builder::new()
            .name("heaptrace-rec".into())
            .spawn(move || write_chunks(file, rx, max_bytes, state, &thread_stopped))?;
        Ok(Self { pending: BytesMut::with_capacity(64 << 10), tx: Some(tx), thread: Some(thread), stopped })
    }

    /// Adds one step to the current chunk.
    pub(crate) fn step(&mut self, step: StepRef<'_>) {
        if self.stopped.load(Ordering::Relaxed) {
            return;
        }
        let mut w = (&mut self.pending).writer();
        // Inputs are plain data: serialising them to memory cannot fail.
        if serde_json::to_writer(&mut w, &step).is_ok() {
            self.pending.put_u8(b'\n');
        }
        if self.pending.len() >= CHUNK_BYTES {
            self.end_chunk();
        }
    }

    /// Sends the steps so far as one chunk (at the end of every interval:
    /// a recording cut short loses at most the current one).
    pub fn end_chunk(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let steps = self.pending.split().freeze();
        if let Some(tx) = &self.tx
            && tx.send(steps).is_err()
        {
            // The thread has ended (an error it reported): nothing to do.
            self.tx = None;
        }
    }

    /// Writes what is left and waits for the file to be complete.
    pub fn finish(mut self) -> Written {
        self.end_chunk();
        drop(self.tx.take());
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(written)) => written,
            _ => Written { error: Some("the recording's writer thread failed".into()), ..Written::default() },
        }
    }
}

impl Drop for RecordingWriter {
    /// An early end (an error in the collector) still writes what it has.
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.end_chunk();
            drop(self.tx.take());
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// The writer thread: each batch of steps compressed into one chunk and
/// appended, until the channel closes, `max_bytes` would be passed, or a
/// write fails. The last two are said at once on stderr (the collector
/// goes on tracing; the recording replays up to there).
fn write_chunks(
    mut file: File,
    rx: Receiver<Bytes>,
    max_bytes: u64,
    mut written: Written,
    stopped: &AtomicBool,
) -> Written {
    for steps in rx {
        if written.stopped_at_max || written.error.is_some() {
            continue;
        }
        let result = chunk(&steps).and_then(|c| {
            if written.bytes + c.len() as u64 > max_bytes {
                return Ok(None);
            }
            file.write_all(&c).map(|()| Some(c.len() as u64))
        });
        match result {
            Ok(Some(n)) => {
                written.bytes += n;
                written.chunks += 1;
            }
            Ok(None) => {
                written.stopped_at_max = true;
                stopped.store(true, Ordering::Relaxed);
                eprintln!(
                    "heaptrace: warning: the recording {} reached --record-max ({}); recording stopped \
                     here (tracing goes on; the file replays up to this point)",
                    written.path.display(),
                    fmt_bytes(max_bytes as f64)
                );
            }
            Err(e) => {
                stopped.store(true, Ordering::Relaxed);
                eprintln!(
                    "heaptrace: warning: writing the recording {} failed: {e}; recording stopped here \
                     (tracing goes on; the file replays up to this point)",
                    written.path.display()
                );
                written.error = Some(e.to_string());
            }
        }
    }
    written
}

/// One chunk: length, CRC-32 and the zlib-compressed payload (public for
/// the fuzzer, which wraps its steps in valid chunks).
pub fn chunk(payload: &[u8]) -> io::Result<Vec<u8>> {
    let mut z = ZlibEncoder::new(Vec::with_capacity(payload.len() / 4 + 64), Compression::fast());
    z.write_all(payload)?;
    let compressed = z.finish()?;
    let len =
        u32::try_from(compressed.len()).map_err(|_| io::Error::other("a recording chunk over 4 GiB"))?;
    let mut out = Vec::with_capacity(compressed.len() + 8);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&compressed).to_le_bytes());
    out.extend_from_slice(&compressed);
    Ok(out)
}
