//! What SIGUSR1 would do to a process, read before it is sent.
//!
//! - `/proc/PID/status`: whether a handler is installed for it (SigCgt;
//!   clear means the default action, which terminates the process), or it
//!   is ignored (SigIgn) or blocked by the main thread (SigBlk).
//! - libuv's tree of signal watchers: node catches SIGUSR1 with a handler
//!   of its own (it starts the inspector), but an application that calls
//!   `process.on('SIGUSR1', …)` starts a libuv signal watcher, and libuv
//!   then installs its own handler over node's: the signal would run the
//!   application's code instead. SigCgt cannot tell the two handlers
//!   apart; the tree can. libuv keeps every active watcher of the process
//!   (all loops) in the static red-black tree `uv__signal_tree`, which is
//!   read here from the process's memory.

use crate::v8::memory::Memory;

pub const SIGUSR1: u32 = 10;

/// The signal masks of `/proc/PID/status` (the main thread's SigBlk).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Masks {
    pub caught: u64,
    pub ignored: u64,
    pub blocked: u64,
}

impl Masks {
    /// From the text of `/proc/PID/status`; None if a mask is missing.
    pub fn parse(status: &str) -> Option<Masks> {
        let mask = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        };
        Some(Masks { caught: mask("SigCgt:")?, ignored: mask("SigIgn:")?, blocked: mask("SigBlk:")? })
    }

    /// Signal n is bit n-1.
    fn has(mask: u64, signal: u32) -> bool {
        (1..=64).contains(&signal) && mask & (1 << (signal - 1)) != 0
    }

    pub fn caught(&self, signal: u32) -> bool {
        Self::has(self.caught, signal)
    }

    pub fn ignored(&self, signal: u32) -> bool {
        Self::has(self.ignored, signal)
    }

    pub fn blocked(&self, signal: u32) -> bool {
        Self::has(self.blocked, signal)
    }
}

/// `uv_signal_t` on x86-64, libuv >= 1.44 (Node 18 has 1.44.2; checked on
/// the official builds of Node 18 to 26): `UV_HANDLE_FIELDS` take 96
/// bytes (`type` at 16), then `signal_cb` at 96, `int signum` at 104 and
/// `RB_ENTRY tree_entry { left @112, right @120, parent @128, color
/// @136 }`.
const TYPE: usize = 16;
const SIGNUM: usize = 104;
const LEFT: usize = 112;
const RIGHT: usize = 120;
const PARENT: usize = 128;
/// Bytes read of each watcher.
const NODE_LEN: usize = 136;
/// `UV_SIGNAL` in `uv_handle_type` (stable since libuv 1.0).
const UV_SIGNAL: u32 = 16;
/// More watchers than a process has: past this the tree is taken to be
/// misread (or changing under the reader).
const MAX_WATCHERS: usize = 4096;

/// How many active libuv watchers for `signal` the tree rooted at the
/// pointer stored at `tree` holds. Each node is checked to be a signal
/// handle whose children point back at it, so a layout other than the one
/// assumed is an error, never a wrong "none".
pub fn watchers_for(memory: &mut dyn Memory, tree: u64, signal: u32) -> Result<usize, String> {
    let root = read_u64(memory, tree).map_err(|e| format!("reading uv__signal_tree at {tree:#x}: {e}"))?;
    let mut count = 0;
    let mut seen = 0usize;
    // (node, the parent it must name)
    let mut stack = vec![(root, 0u64)];
    while let Some((node, parent)) = stack.pop() {
        if node == 0 {
            continue;
        }
        seen += 1;
        if seen > MAX_WATCHERS {
            return Err(format!("more than {MAX_WATCHERS} signal watchers: the tree was misread"));
        }
        let mut buf = [0u8; NODE_LEN];
        memory.read(node, &mut buf).map_err(|e| format!("reading a signal watcher at {node:#x}: {e}"))?;
        let u32_at = |o: usize| u32::from_le_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
        let u64_at = |o: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&buf[o..o + 8]);
            u64::from_le_bytes(w)
        };
        if u32_at(TYPE) != UV_SIGNAL || u64_at(PARENT) != parent {
            return Err(format!(
                "the handle at {node:#x} is not a uv_signal_t of the expected layout (type {}, parent {:#x}, expected {parent:#x})",
                u32_at(TYPE),
                u64_at(PARENT)
            ));
        }
        if u32_at(SIGNUM) == signal {
            count += 1;
        }
        stack.push((u64_at(LEFT), node));
        stack.push((u64_at(RIGHT), node));
    }
    Ok(count)
}

fn read_u64(memory: &mut dyn Memory, addr: u64) -> Result<u64, String> {
    let mut w = [0u8; 8];
    memory.read(addr, &mut w)?;
    Ok(u64::from_le_bytes(w))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn status_masks() {
        // Node 20 with its inspector handler; SIGUSR1 is bit 9.
        let status = "Name:\tnode\nSigQ:\t0/96365\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n\
                      SigBlk:\t0000000000000000\nSigIgn:\t0000000001001000\nSigCgt:\t0000000100004602\n";
        let m = Masks::parse(status).unwrap();
        assert!(m.caught(SIGUSR1) && !m.ignored(SIGUSR1) && !m.blocked(SIGUSR1));
        assert!(m.ignored(13), "SIGPIPE");
        assert!(m.caught(2) && m.caught(15) && m.caught(33));
        // Under --disable-sigusr1 or the permission model: blocked, no handler.
        let status = "SigBlk:\t0000000000000200\nSigIgn:\t0000000001001000\nSigCgt:\t0000000100004402\n";
        let m = Masks::parse(status).unwrap();
        assert!(!m.caught(SIGUSR1) && m.blocked(SIGUSR1));
        assert!(!m.caught(0) && !m.caught(65));
        assert_eq!(Masks::parse("SigCgt:\t12\n"), None);
        assert_eq!(Masks::parse("SigBlk: x\nSigIgn: 0\nSigCgt: 0\n"), None);
    }

    /// A fake process memory of 8-byte-aligned watchers.
    #[derive(Default)]
    struct Fake(HashMap<u64, Vec<u8>>);

    impl Memory for Fake {
        fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), String> {
            let bytes = self.0.get(&addr).ok_or_else(|| format!("unmapped {addr:#x}"))?;
            buf.copy_from_slice(bytes.get(..buf.len()).ok_or("short")?);
            Ok(())
        }
    }

    impl Fake {
        fn watcher(&mut self, at: u64, ty: u32, signum: u32, left: u64, right: u64, parent: u64) {
            let mut b = vec![0u8; NODE_LEN];
            b[TYPE..TYPE + 4].copy_from_slice(&ty.to_le_bytes());
            b[SIGNUM..SIGNUM + 4].copy_from_slice(&signum.to_le_bytes());
            b[LEFT..LEFT + 8].copy_from_slice(&left.to_le_bytes());
            b[RIGHT..RIGHT + 8].copy_from_slice(&right.to_le_bytes());
            b[PARENT..PARENT + 8].copy_from_slice(&parent.to_le_bytes());
            self.0.insert(at, b);
        }
    }

    #[test]
    fn the_tree_is_walked_and_checked() {
        const TREE: u64 = 0x5000;
        let mut m = Fake::default();
        m.0.insert(TREE, 0u64.to_le_bytes().to_vec());
        assert_eq!(watchers_for(&mut m, TREE, SIGUSR1), Ok(0), "an empty tree");

        // SIGUSR1 at the root, SIGHUP (1) and SIGWINCH (28) below, as
        // Node 18-26 show for process.on('SIGUSR1') + process.on('SIGHUP').
        m.0.insert(TREE, 0x1000u64.to_le_bytes().to_vec());
        m.watcher(0x1000, UV_SIGNAL, SIGUSR1, 0x2000, 0x3000, 0);
        m.watcher(0x2000, UV_SIGNAL, 1, 0, 0, 0x1000);
        m.watcher(0x3000, UV_SIGNAL, 28, 0, 0, 0x1000);
        assert_eq!(watchers_for(&mut m, TREE, SIGUSR1), Ok(1));
        assert_eq!(watchers_for(&mut m, TREE, 2), Ok(0));

        // Another layout: not a signal handle, or children that do not
        // point back, is an error rather than "no watcher".
        m.watcher(0x3000, 13, 28, 0, 0, 0x1000);
        assert!(watchers_for(&mut m, TREE, 2).unwrap_err().contains("not a uv_signal_t"));
        m.watcher(0x3000, UV_SIGNAL, 28, 0, 0, 0x2000);
        assert!(watchers_for(&mut m, TREE, 2).is_err());
        // A cycle is cut by the parent check; unreadable memory is an error.
        m.watcher(0x3000, UV_SIGNAL, 28, 0x1000, 0, 0x1000);
        assert!(watchers_for(&mut m, TREE, 2).is_err());
        m.watcher(0x3000, UV_SIGNAL, 28, 0x9000, 0, 0x1000);
        assert!(watchers_for(&mut m, TREE, 2).unwrap_err().contains("0x9000"));
        assert!(watchers_for(&mut m, 0x7777, 2).is_err());
    }
}
