//! The sampling heap profiler's profile as allocation sites (STUB).
use super::report::SampledSite;

pub fn sites(_profile: &serde_json::Value) -> Vec<SampledSite> {
    Vec::new()
}
