//! The live full-screen view (`heaptrace --pid N` on a terminal) and the
//! same view over a finished recording ([`browse`]).
//!
//! - [`state`]: what the view knows, built record by record (pure,
//!   bounded); [`timeline`]: that state at any time of a recording.
//! - [`ui`]: sort, filter, selection and what keys do (pure).
//! - [`view`]: drawing a state into a ratatui frame (pure, no I/O).
//! - [`terminal`]: the terminal, its guard and panic hook, stderr captured
//!   while the view is up, the live and browse loops.
//! - [`sink`]: the collector's side, a [`crate::output::Sink`].

pub mod sink;
pub mod state;
pub mod terminal;
pub mod timeline;
pub mod ui;
pub mod view;

#[cfg(test)]
mod fixtures;

pub use sink::TuiSink;
pub use terminal::browse;
