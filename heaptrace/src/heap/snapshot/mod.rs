//! Heap snapshot analysis (STUB: being written).
pub use super::report::is_user_class;
use super::report::{ClassStats, RetainerPath};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a V8 heap snapshot: {0}")]
    Invalid(String),
}

/// A parsed snapshot with its per-class figures. `Send`: built and analysed
/// on a blocking thread.
pub struct Snapshot {}

impl Snapshot {
    pub fn parse(_json: &[u8]) -> Result<Snapshot, SnapshotError> {
        Err(SnapshotError::Invalid("stub".into()))
    }
    /// Every class, by retained bytes, largest first; deltas are None.
    pub fn classes(&self) -> &[ClassStats] {
        &[]
    }
    pub fn node_count(&self) -> usize {
        0
    }
}

/// Every class of either snapshot with its deltas set, by self-bytes growth,
/// largest first.
pub fn diff(_before: &Snapshot, _after: &Snapshot) -> Vec<ClassStats> {
    Vec::new()
}

/// The shortest strong path from a root to one instance of `class`; with
/// `not_in`, preferring an instance that snapshot did not have (a new one).
pub fn retainer_path(_snapshot: &Snapshot, _class: &str, _not_in: Option<&Snapshot>) -> Option<RetainerPath> {
    None
}
