//! The loader: finds the file that holds V8 in a process (the executable,
//! or a library such as Debian's `libnode.so`) and inspects it once. Files
//! are opened through `/proc/PID/exe` and `/proc/PID/map_files`, which work
//! for processes in containers and chroots and for deleted binaries.
//! Results are cached by file identity (device, inode) and by build-id, so
//! many processes of one binary, or copies of it (container image layers),
//! pay for one walk of its symbol tables.

use std::{
    collections::HashMap,
    fs::File,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use thiserror::Error;

use super::binary::{V8Binary, build_id, resolve};

/// A file's identity: (device, inode). Uprobes are placed per inode, so
/// this also keys the probes shared by every process of a binary.
pub type FileId = (u64, u64);

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a readable ELF file: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: object::Error,
    },
}

/// Where V8 lives in one process.
#[derive(Clone, Debug)]
pub struct ProcessBinary {
    /// Path to attach uprobes to (`/proc/PID/exe` or a map_files entry).
    pub attach_path: PathBuf,
    /// The file as the process sees it, for messages.
    pub display_path: String,
    pub file: FileId,
    pub binary: Arc<V8Binary>,
}

impl ProcessBinary {
    /// What to add to a link-time address of this file to get its address
    /// in process `pid`: 0 for a file that is not position-independent
    /// (official node builds); for a shared library or a PIE, where the
    /// process mapped the file's start (the mapping at file offset 0 of
    /// this very file, by device and inode through map_files) less the
    /// file's own image base.
    pub fn load_bias(&self, pid: u32) -> Result<u64, String> {
        if !self.binary.relocatable {
            return Ok(0);
        }
        let maps = procfs::process::Process::new(pid as i32)
            .and_then(|p| p.maps())
            .map_err(|e| format!("cannot read process {pid}'s mappings: {e}"))?;
        for m in maps {
            let (start, end) = m.address;
            if m.offset != 0 || !matches!(m.pathname, procfs::process::MMapPath::Path(_)) {
                continue;
            }
            let same_file = std::fs::metadata(format!("/proc/{pid}/map_files/{start:x}-{end:x}"))
                .is_ok_and(|meta| (meta.dev(), meta.ino()) == self.file);
            if same_file {
                return Ok(start.wrapping_sub(self.binary.image_base));
            }
        }
        Err(format!("{} is not mapped in process {pid}", self.display_path))
    }
}

/// Outcome of looking for V8 in a process.
pub enum Found {
    V8(ProcessBinary),
    /// No candidate file has V8's GC functions. `looked_at` names the files
    /// and their build-ids, so a stripped binary can be identified.
    NotV8 {
        looked_at: Vec<(String, Option<String>)>,
    },
}

#[derive(Default)]
pub struct Loader {
    by_file: HashMap<FileId, Arc<V8Binary>>,
    by_build_id: HashMap<String, Arc<V8Binary>>,
}

impl Loader {
    /// Looks for V8 in the executable and in libraries named like libnode.
    pub fn find_in_process(&mut self, pid: u32) -> Result<Found, LoadError> {
        let mut looked_at = Vec::new();
        for (attach_path, display_path) in candidates(pid) {
            let (file, binary) = self.load(&attach_path)?;
            if binary.has_v8() {
                return Ok(Found::V8(ProcessBinary { attach_path, display_path, file, binary }));
            }
            looked_at.push((display_path, binary.build_id.clone()));
        }
        Ok(Found::NotV8 { looked_at })
    }

    /// Whether the executable of `pid` was inspected before (so finding V8
    /// in it costs no symbol-table walk). False if it cannot be read.
    pub fn knows_executable(&self, pid: u32) -> bool {
        std::fs::metadata(format!("/proc/{pid}/exe"))
            .is_ok_and(|m| self.by_file.contains_key(&(m.dev(), m.ino())))
    }

    /// Inspects one ELF file, or returns what an earlier look found.
    pub fn load(&mut self, path: &Path) -> Result<(FileId, Arc<V8Binary>), LoadError> {
        let open_err = |source| LoadError::Open { path: path.to_owned(), source };
        let file = File::open(path).map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        let key = (meta.dev(), meta.ino());
        if let Some(hit) = self.by_file.get(&key) {
            return Ok((key, hit.clone()));
        }
        // SAFETY: the mapping is read-only and private to this function. A
        // binary being rewritten while mapped could change under us; the
        // parser then sees garbage and fails, it does not cause UB in safe
        // code that only reads bytes.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(open_err)?;
        let parse_err = |source| LoadError::Parse { path: path.to_owned(), source };
        let id = build_id(&map).map_err(parse_err)?;
        let cached = id.as_ref().and_then(|id| self.by_build_id.get(id)).cloned();
        let binary = match cached {
            Some(hit) => hit,
            None => Arc::new(resolve(&map).map_err(parse_err)?),
        };
        if let Some(id) = id {
            self.by_build_id.insert(id, binary.clone());
        }
        self.by_file.insert(key, binary.clone());
        Ok((key, binary))
    }
}

/// Files that may hold V8: the executable, then mapped libraries whose name
/// contains "libnode" (Debian and other distribution builds; such a library
/// is mapped only once the dynamic loader has run, which is why the
/// collector looks again a few intervals after an exec).
fn candidates(pid: u32) -> Vec<(PathBuf, String)> {
    let exe_display =
        std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.display().to_string()).unwrap_or_default();
    let mut out = vec![(PathBuf::from(format!("/proc/{pid}/exe")), exe_display)];
    let Ok(maps) = procfs::process::Process::new(pid as i32).and_then(|p| p.maps()) else { return out };
    let mut seen = std::collections::HashSet::new();
    for m in maps {
        if let procfs::process::MMapPath::Path(path) = &m.pathname {
            let is_libnode = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains("libnode"));
            if is_libnode && m.offset == 0 && seen.insert(path.clone()) {
                let (start, end) = m.address;
                out.push((
                    PathBuf::from(format!("/proc/{pid}/map_files/{start:x}-{end:x}")),
                    path.display().to_string(),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_of_a_binary_are_inspected_once_by_build_id() {
        // Two copies of one ELF file (this test binary: it has a build-id).
        let me = std::env::current_exe().unwrap();
        let dir = std::env::temp_dir().join(format!("heaptrace-loader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::copy(&me, &a).unwrap();
        std::fs::copy(&me, &b).unwrap();
        let mut loader = Loader::default();
        let (_, first) = loader.load(&a).unwrap();
        let (_, second) = loader.load(&b).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(first.build_id.is_some());
        assert!(Arc::ptr_eq(&first, &second), "the copy was inspected again");
        assert_eq!(loader.by_file.len(), 2);
        assert_eq!(loader.by_build_id.len(), 1);
    }

    #[test]
    fn this_process_is_not_v8_and_says_what_it_looked_at() {
        let mut loader = Loader::default();
        let Found::NotV8 { looked_at } = loader.find_in_process(std::process::id()).unwrap() else {
            panic!("V8 found in the test binary");
        };
        assert_eq!(looked_at.len(), 1, "{looked_at:?}");
        assert!(looked_at[0].1.is_some(), "the build-id is named");
        assert!(loader.knows_executable(std::process::id()));
    }
}
