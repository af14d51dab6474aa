//! What a stack is made of, once named: the types every part of the
//! allocation-site path shares (the kernel's raw frames, the namers'
//! output, the core's sites, the flame graph and pprof writers).

use serde::Serialize;

/// One frame as the kernel captured it, by a frame-pointer walk of the user
/// stack at an allocating syscall.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RawFrame {
    /// The instruction address this frame executes (the return address its
    /// callee pushed; for the innermost frame, the syscall's user `ip`).
    pub pc: u64,
    /// The word at `fp - 16` of this frame, read at capture time: in a V8 JS
    /// frame that is the `JSFunction` (V8's `StandardFrameConstants::
    /// kFunctionOffset`); elsewhere it is whatever the native code keeps
    /// there. 0 when it could not be read.
    pub function_slot: u64,
}

/// What kind of code a frame is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FrameKind {
    /// A JavaScript function (interpreted or compiled), named from V8's
    /// postmortem metadata or the process's perf map, or `[JS]`.
    Js,
    /// Native code in a file (node, libc, a native addon).
    Native,
    /// One of V8's builtins (`Builtins_*`, embedded in the binary).
    Builtin,
    /// The kernel.
    Kernel,
}

/// One frame, named. Frames are listed innermost first.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Frame {
    /// The function: `handler`, `Builtins_ArrayConstructor`,
    /// `v8::internal::Heap::AllocateRaw`, or, when it cannot be named,
    /// `[JS]` (a JS frame whose function could not be read), `[unknown]`
    /// (no file and no JS function), or `0x1a2b3c` (an offset in a file
    /// without symbols; see `build_id`).
    pub function: String,
    /// The script for JS frames (as V8 knows it: a path or `node:internal/…`),
    /// the file for native frames.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The line the JS function starts on (1-based), as `--perf-basic-prof`
    /// and DevTools give it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    pub kind: FrameKind,
    /// For a native frame in a file without symbols: the file's GNU build-id,
    /// so the address can be named later against the unstripped build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
}

impl Frame {
    /// A frame that could not be named at all.
    pub fn unknown() -> Self {
        Frame {
            function: "[unknown]".into(),
            file: None,
            line: None,
            kind: FrameKind::Native,
            build_id: None,
        }
    }

    /// A JS frame whose function could not be read.
    pub fn unnamed_js() -> Self {
        Frame { function: "[JS]".into(), file: None, line: None, kind: FrameKind::Js, build_id: None }
    }

    /// Whether this frame carries a real name (not `[JS]`, `[unknown]` or a
    /// bare address).
    pub fn is_named(&self) -> bool {
        !(self.function.starts_with('[') || self.function.starts_with("0x"))
    }

    /// `handler (app.js:17)`, `Builtins_ArrayConstructor`, `malloc`: how the
    /// text output and the flame graph show it. Files are shortened to their
    /// last component, as the text has little room.
    pub fn label(&self) -> String {
        match (&self.file, self.line, self.kind) {
            (Some(file), Some(line), FrameKind::Js) => {
                format!("{} ({}:{line})", self.function, short_file(file))
            }
            (Some(file), None, FrameKind::Js) => format!("{} ({})", self.function, short_file(file)),
            _ => self.function.clone(),
        }
    }
}

/// The last component of a path or URL (`/srv/app/app.js` → `app.js`).
pub fn short_file(file: &str) -> &str {
    file.rsplit('/').next().unwrap_or(file)
}
