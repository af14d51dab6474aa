//! Builds the kernel programs (heaptrace-ebpf) for the BPF target and places
//! the object in OUT_DIR, where `kernel::EBPF_OBJECT` embeds it.
//!
//! With AYA_BUILD_SKIP=1 (for a quick `cargo check` on a machine without
//! bpf-linker) an empty stub object is written instead; the loader refuses
//! it at run time with a clear message.
use std::{env, fs, path::PathBuf};

fn main() -> aya_build::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir.join("../heaptrace-ebpf");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    println!("cargo::rerun-if-changed={}", ebpf_dir.display());
    println!("cargo::rerun-if-changed=../heaptrace-common/src");

    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        fs::write(out_dir.join("heaptrace"), [])?;
        return Ok(());
    }
    // `-Z build-std=core` needs unstable cargo flags; RUSTC_BOOTSTRAP=1 allows
    // them on the pinned stable toolchain. It is set in this build script's
    // environment only, so it reaches the eBPF sub-build and nothing else.
    // SAFETY: build scripts are single-threaded at this point; nothing else
    // reads or writes the environment concurrently.
    unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
    let root_dir =
        ebpf_dir.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 path: {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package { name: "heaptrace-ebpf", root_dir, ..Default::default() }],
        aya_build::Toolchain::Custom("1.99.1"),
    )
}
