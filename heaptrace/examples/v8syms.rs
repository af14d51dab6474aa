//! Prints the V8 probe points heaptrace finds in an ELF file:
//! `cargo run --release --example v8syms -- /path/to/node`
use std::time::Instant;

fn main() {
    for path in std::env::args().skip(1) {
        let t = Instant::now();
        let data = std::fs::read(&path).expect("read");
        let syms = heaptrace::symbols::resolve(&data).expect("parse");
        println!(
            "{path}: build-id {:?}, timestamps {}, {:?}",
            syms.build_id,
            syms.passes_timestamps(),
            t.elapsed()
        );
        for f in heaptrace::symbols::V8Function::ALL {
            println!(
                "  {:<34} {:?}",
                f.name(),
                syms.functions.get(&f).map(|v| v
                    .iter()
                    .map(|s| format!("{:#x} {}", s.file_offset, &s.name[s.name.len().saturating_sub(40)..]))
                    .collect::<Vec<_>>())
            );
        }
    }
}
