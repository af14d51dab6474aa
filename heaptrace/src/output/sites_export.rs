//! What the flame graph and pprof writers share: their input (the sites of
//! a set of processes), their error type, and writing the result to a file.
//!
//! Both writers are pure (sites in, bytes out), so they are tested without
//! tracing anything, and the caller decides where the bytes go.

use std::{
    io,
    path::{Path, PathBuf},
};

use thiserror::Error;

use crate::core::sites::{AllocationSite, Frame};

/// The allocation sites of one process, as the writers take them.
#[derive(Clone, Copy, Debug)]
pub struct ProcessSites<'a> {
    pub pid: u32,
    /// The process's name (its `comm`, e.g. `node`).
    pub name: &'a str,
    pub sites: &'a [AllocationSite],
}

/// Why a flame graph or profile could not be made or written.
#[derive(Debug, Error)]
pub enum ExportError {
    /// Every site weighs zero (or there are none): inferno cannot draw an
    /// empty graph, and an empty SVG would look like a failure to the reader.
    #[error("no allocation site has any {what} to draw: trace longer, or pick the other weight")]
    NothingToDraw {
        /// "allocated bytes" or "live bytes".
        what: &'static str,
    },
    /// inferno failed to render the folded stacks.
    #[error("rendering the flame graph: {0}")]
    Render(#[source] io::Error),
    /// gzip failed (in memory, so only on exhaustion).
    #[error("compressing the profile: {0}")]
    Compress(#[source] io::Error),
    /// The output file's directory does not exist: say which, rather than a
    /// bare "No such file or directory".
    #[error("cannot write {}: its directory {} does not exist; create it or pick another path", path.display(), dir.display())]
    MissingDirectory { path: PathBuf, dir: PathBuf },
    /// Creating or writing the output file failed.
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Writes `bytes` to `path`, creating or truncating it. The file gets the
/// usual mode (0666 less the umask, so 0644): it holds function and file
/// names, nothing secret.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    std::fs::write(path, bytes).map_err(|source| {
        // `fs::write` reports a missing directory as NotFound with no path;
        // name the directory, the one thing the user has to fix.
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        match dir {
            Some(dir) if source.kind() == io::ErrorKind::NotFound && !dir.is_dir() => {
                ExportError::MissingDirectory { path: path.to_path_buf(), dir: dir.to_path_buf() }
            }
            _ => ExportError::Write { path: path.to_path_buf(), source },
        }
    })
}

/// A site's frames, innermost first; a site without any gets one
/// `[unknown]` frame, so its bytes still show under the process instead of
/// vanishing (pprof) or sitting on the root frame unexplained (flame graph).
pub(super) fn frames_or_unknown(site: &AllocationSite) -> std::borrow::Cow<'_, [Frame]> {
    if site.frames.is_empty() { vec![Frame::unknown()].into() } else { site.frames.as_slice().into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("heaptrace-sites-export-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn writes_the_bytes() {
        let dir = scratch("ok");
        let path = dir.join("out.svg");
        write_file(&path, b"<svg/>").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"<svg/>");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_directory_is_named() {
        let dir = scratch("missing");
        let path = dir.join("no/such/dir/out.pb.gz");
        let err = write_file(&path, b"x").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ExportError::MissingDirectory { .. }), "{err:?}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains(&dir.join("no/such/dir").display().to_string()), "{text}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn other_failures_name_the_path() {
        let dir = scratch("isdir");
        // Writing to a directory fails, but not because a directory is missing.
        let err = write_file(&dir, b"x").unwrap_err();
        assert!(matches!(err, ExportError::Write { .. }), "{err:?}");
        assert!(err.to_string().starts_with(&format!("writing {}: ", dir.display())), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
