//! Reads a recording chunk by chunk. Hostile or damaged input is expected
//! (a file cut by SIGKILL, a wrong file, garbage): nothing here panics or
//! allocates more than [`MAX_CHUNK`] compressed and [`MAX_STEPS_BYTES`]
//! decompressed per chunk. A damaged or incomplete chunk ends the reading
//! there, and [`Reader::cut`] says where and why.

use std::{
    fs::File,
    io::{self, BufReader, Read},
    path::Path,
};

use flate2::read::ZlibDecoder;

use super::{FORMAT_VERSION, Header, MAGIC, RecordingError, Step};

/// The largest compressed chunk accepted (the writer's are about 1 MiB of
/// steps before compression at most; a bigger length is damage).
pub const MAX_CHUNK: u32 = 64 << 20;
/// The most a chunk may decompress to.
pub const MAX_STEPS_BYTES: u64 = 256 << 20;

/// Where and why a recording ends before its summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    /// Bytes of the file read whole (header and complete chunks).
    pub at_byte: u64,
    /// Complete step chunks before it.
    pub chunks: u64,
    pub why: String,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} after byte {} ({} complete chunks read)", self.why, self.at_byte, self.chunks)
    }
}

/// A recording being read.
pub struct Reader<R> {
    inner: R,
    header: Header,
    pos: u64,
    chunks: u64,
    cut: Option<Cut>,
    done: bool,
}

impl Reader<BufReader<File>> {
    pub fn open(path: &Path) -> Result<Self, RecordingError> {
        let file = File::open(path)?;
        if file.metadata()?.is_dir() {
            return Err(RecordingError::Io(io::Error::other("is a directory")));
        }
        Self::new(BufReader::with_capacity(1 << 20, file))
    }
}

impl<R: Read> Reader<R> {
    /// Reads the magic, the version and the header: the errors that make a
    /// file unreadable as a whole.
    pub fn new(mut inner: R) -> Result<Self, RecordingError> {
        let mut magic = [0u8; MAGIC.len() + 4];
        let got = read_up_to(&mut inner, &mut magic)?;
        if got == 0 {
            return Err(RecordingError::Empty);
        }
        let prefix = got.min(MAGIC.len());
        if magic[..prefix] != MAGIC[..prefix] {
            return Err(RecordingError::NotARecording);
        }
        if got < magic.len() {
            return Err(RecordingError::BadHeader(format!(
                "the file ends after {got} bytes, before its header"
            )));
        }
        let version = u32::from_le_bytes(magic[MAGIC.len()..].try_into().expect("4 bytes"));
        if version > FORMAT_VERSION {
            return Err(RecordingError::FutureVersion { found: version });
        }
        if version == 0 {
            return Err(RecordingError::BadHeader("format version 0 does not exist".into()));
        }
        let mut pos = magic.len() as u64;
        let payload = match read_chunk(&mut inner, &mut pos) {
            Ok(Some(payload)) => payload,
            Ok(None) => return Err(RecordingError::BadHeader("no header chunk".into())),
            Err(why) => return Err(RecordingError::BadHeader(why)),
        };
        let line = payload.split(|&b| b == b'\n').next().unwrap_or_default();
        let header = serde_json::from_slice(line).map_err(|e| RecordingError::BadHeader(e.to_string()))?;
        Ok(Self { inner, header, pos, chunks: 0, cut: None, done: false })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Why the recording ended early, once reading has reached that point.
    pub fn cut(&self) -> Option<&Cut> {
        self.cut.as_ref()
    }

    /// Bytes read whole so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next chunk's steps; None at the end of the file or at the first
    /// damaged or incomplete chunk (see [`Self::cut`]).
    pub fn next_steps(&mut self) -> Option<Vec<Step>> {
        if self.done {
            return None;
        }
        let at = self.pos;
        let result = read_chunk(&mut self.inner, &mut self.pos)
            .and_then(|payload| payload.map(|p| parse_steps(&p)).transpose());
        match result {
            Ok(Some(steps)) => {
                self.chunks += 1;
                Some(steps)
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(why) => {
                self.done = true;
                self.cut = Some(Cut { at_byte: at, chunks: self.chunks, why });
                None
            }
        }
    }
}

/// One chunk's decompressed payload; None at a clean end of file.
fn read_chunk(inner: &mut impl Read, pos: &mut u64) -> Result<Option<Vec<u8>>, String> {
    let mut head = [0u8; 8];
    let got = read_up_to(inner, &mut head).map_err(|e| e.to_string())?;
    if got == 0 {
        return Ok(None);
    }
    if got < head.len() {
        return Err(format!("an incomplete chunk header ({got} of 8 bytes)"));
    }
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    if len > MAX_CHUNK {
        return Err(format!("a damaged chunk (length {len})"));
    }
    // Read through `take`, not into a buffer of `len`: a damaged length
    // must not allocate what the file does not hold.
    let mut compressed = Vec::new();
    let got =
        Read::take(&mut *inner, u64::from(len)).read_to_end(&mut compressed).map_err(|e| e.to_string())?;
    if got < len as usize {
        return Err(format!("an incomplete chunk ({got} of {len} bytes)"));
    }
    if crc32fast::hash(&compressed) != crc {
        return Err("a damaged chunk (its checksum does not match)".into());
    }
    let mut payload = Vec::new();
    ZlibDecoder::new(compressed.as_slice())
        .take(MAX_STEPS_BYTES + 1)
        .read_to_end(&mut payload)
        .map_err(|e| format!("a damaged chunk ({e})"))?;
    if payload.len() as u64 > MAX_STEPS_BYTES {
        return Err(format!("a chunk of more than {MAX_STEPS_BYTES} bytes"));
    }
    *pos += 8 + u64::from(len);
    Ok(Some(payload))
}

fn parse_steps(payload: &[u8]) -> Result<Vec<Step>, String> {
    payload
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).map_err(|e| format!("an unreadable step ({e})")))
        .collect()
}

/// Reads until `buf` is full or the input ends; how many bytes were read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
