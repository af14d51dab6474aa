fn main() {
    // aya-build passes --cfg bpf_target_arch=...; declare it for check-cfg.
    println!("cargo::rustc-check-cfg=cfg(bpf_target_arch, values(\"x86_64\", \"aarch64\"))");
}
