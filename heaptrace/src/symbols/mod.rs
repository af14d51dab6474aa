//! Naming the frames of captured stacks.
//!
//! The kernel captures user stacks as bare instruction addresses. `native`
//! names those that fall in files (node, libc, native addons) and says which
//! fall in anonymous memory, where V8's JIT code lives, so that a JS namer
//! can try them.

pub mod native;
