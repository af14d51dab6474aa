//! Node's inspector from outside (STUB: being written).
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("stub")]
    Stub,
}

#[derive(Debug, thiserror::Error)]
pub enum InspectorError {
    #[error("stub")]
    Stub,
}

/// A node process that passed every check, and where its inspector will be.
#[derive(Debug, Clone)]
pub struct Target {
    pub pid: u32,
    pub port: u16,
    /// The inspector was already listening (no session attached): heaptrace
    /// uses it and leaves it open.
    pub already_open: bool,
}

/// Every check before anything is sent to the process.
pub fn preflight(_pid: u32) -> Result<Target, Refusal> {
    Err(Refusal::Stub)
}

pub struct Session {}

impl Session {
    pub async fn open(_target: &Target, _timeout: Duration) -> Result<Session, InspectorError> {
        Err(InspectorError::Stub)
    }
    pub async fn call(
        &mut self,
        _method: &str,
        _params: serde_json::Value,
    ) -> Result<serde_json::Value, InspectorError> {
        Err(InspectorError::Stub)
    }
    pub async fn heap_used(&mut self) -> Result<u64, InspectorError> {
        Err(InspectorError::Stub)
    }
    pub async fn take_snapshot(&mut self) -> Result<Vec<u8>, InspectorError> {
        Err(InspectorError::Stub)
    }
    pub async fn start_sampling(&mut self, _interval_bytes: u64) -> Result<(), InspectorError> {
        Err(InspectorError::Stub)
    }
    pub async fn stop_sampling(&mut self) -> Result<serde_json::Value, InspectorError> {
        Err(InspectorError::Stub)
    }
    pub fn opened(&self) -> bool {
        false
    }
    pub async fn close(self) -> Result<(), InspectorError> {
        Err(InspectorError::Stub)
    }
}
