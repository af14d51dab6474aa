//! heaptrace's kernel programs. This file only registers modules; each
//! concern lives in its own file and every program is a few dozen lines:
//! filter on the traced set first, update a map, stream only what is needed.
#![no_std]
#![no_main]
// For the atomic-add intrinsic (see maps::atomic_add). The eBPF crate is
// built with RUSTC_BOOTSTRAP=1 already, for -Z build-std.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod event;
mod gc;
mod lifecycle;
mod maps;
mod mem;
mod stacks;
mod task;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never run.
    loop {}
}

/// GPL-compatible licence: bpf_probe_read_kernel is a GPL-only helper.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
