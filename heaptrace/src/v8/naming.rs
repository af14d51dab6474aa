//! The stack namer's handle on JS frames (see `crate::symbols::stacks`).

use super::V8Support;
use crate::symbols::stacks::{JsAnswer, JsNamer};

impl JsNamer for V8Support {
    fn name(&mut self, _pid: u32, _function_slot: u64) -> JsAnswer {
        Err("JS frames are not named yet".into())
    }

    fn perf_map(&mut self, _pid: u32, _pc: u64) -> Option<String> {
        None
    }
}
