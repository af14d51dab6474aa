//! Node's inspector from outside: open it in a running process, speak the
//! DevTools protocol to it, and close it again, leaving the process as it
//! was.
//!
//! - [`preflight`] checks everything before anything is sent, from /proc
//!   and the process's memory ([`preflight()`] returns a [`Target`] or a
//!   [`Refusal`] that says what to do). SIGUSR1 is node's request to open
//!   its inspector, but for any other program, for a node that does not
//!   catch it (`--disable-sigusr1`, the permission model) or whose
//!   application handles it, it is fatal or does something else.
//! - [`Session::open`] sends SIGUSR1 (through a pidfd, so never to a
//!   process that reused the pid), waits for the process's own new
//!   listening socket, and connects to it from inside the process's
//!   network namespace ([`netns`]), so containers work. A
//!   [`Session`] is one DevTools client: [`Session::call`] and the heap
//!   calls built on it ([`session`]).
//! - [`Session::close`] closes the inspector if heaptrace opened it, and
//!   checks that its port refuses connections; an inspector that was
//!   already open is left as it was.
//!
//! Facts this rests on, verified on the official builds of Node 18, 20, 22,
//! 24 and 26 (tests/inspector.rs checks them):
//! - SIGUSR1 opens the inspector on 127.0.0.1:9229 (or `--inspect-port`).
//! - `require('inspector').close()`, run with `Runtime.evaluate` and
//!   `includeCommandLineAPI` (which gives `require`, ES modules included),
//!   drops every session and stops listening; the process runs on. The
//!   connection drops before the reply comes. node's main thread waits
//!   until every client has closed its end: immediate for clients that
//!   answer the close (heaptrace's, DevTools'), but one that does not
//!   holds up the event loop for as long. So heaptrace does not close an
//!   inspector that another client joined meanwhile.
//! - `/json/list` gives `webSocketDebuggerUrl` even while a client is
//!   connected, and a second client can attach: an attached debugger is
//!   seen in /proc instead (established connections to the process's own
//!   listening socket).
//! - Under the permission model (Node 20's `--experimental-permission`,
//!   `--permission`, Node 26's `--permission-audit`) and under
//!   `--disable-sigusr1` (Node 22+), node blocks SIGUSR1 and installs no
//!   handler for it; `--allow-inspector` (Node 24+) restores both.

mod connect;
mod flags;
mod netns;
mod preflight;
mod session;
mod signals;

use std::{net::SocketAddr, os::fd::OwnedFd, sync::Arc};

pub use flags::Source;
pub use preflight::{Refusal, preflight};
pub use session::{DEFAULT_TIMEOUT, InspectorError, Session};

/// Whether the application's own SIGUSR1 handling could be ruled out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandlerCheck {
    /// libuv's signal tree was read: no watcher for SIGUSR1.
    NoAppHandler,
    /// The tree could not be read (e.g. Debian's node: libuv without its
    /// local symbols); why. A missing inspector after the signal is then
    /// worded with this possibility.
    Unavailable(String),
    /// Nothing is sent (the inspector is already open).
    NotNeeded,
}

/// A node process that passed every check, and where its inspector will be.
#[derive(Debug, Clone)]
pub struct Target {
    pub pid: u32,
    /// The inspector's port: from `--inspect-port`/`--inspect=`, else 9229;
    /// 0 when node is told to pick one (then the port it picks is found
    /// when it opens).
    pub port: u16,
    /// The inspector was already listening (no session attached): heaptrace
    /// uses it and leaves it open.
    pub already_open: bool,
    /// The host the inspector binds, as node's options give it.
    pub host: String,
    /// Where the open inspector listens (when `already_open`).
    pub listening: Option<SocketAddr>,
    /// Whether an application SIGUSR1 handler could be ruled out.
    pub handler_check: HandlerCheck,
    /// The process, held so that the signal reaches it and no other.
    pidfd: Arc<OwnedFd>,
    /// Where libuv's signal tree is in the process, looked at again just
    /// before the signal.
    signal_tree: Option<u64>,
}
