//! Prints the V8 probe points heaptrace finds in an ELF file, and which
//! probes of the table would be attached:
//! `cargo run --release --example v8syms -- /path/to/node`
use std::{process::ExitCode, time::Instant};

use heaptrace::v8::{
    binary::resolve,
    probes::{PROBES, V8Function},
};

fn main() -> ExitCode {
    let mut status = ExitCode::SUCCESS;
    for path in std::env::args().skip(1) {
        let t = Instant::now();
        let binary = match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|data| resolve(&data).map_err(|e| format!("not a readable ELF file ({e})")))
        {
            Ok(binary) => binary,
            Err(e) => {
                eprintln!("v8syms: {path}: {e}");
                status = ExitCode::FAILURE;
                continue;
            }
        };
        let generation = binary.generation();
        println!("{path}: build-id {:?}, {generation:?}, read in {:?}", binary.build_id, t.elapsed());
        for f in V8Function::ALL {
            let found: Vec<String> = binary
                .functions
                .get(&f)
                .into_iter()
                .flatten()
                .map(|s| format!("{:#x} {}", s.file_offset, &s.name[s.name.len().saturating_sub(40)..]))
                .collect();
            println!("  {:<34} {found:?}", f.name());
        }
        let programs: Vec<&str> = PROBES
            .iter()
            .filter(|p| p.applies_to(generation) && !binary.offsets(p.function).is_empty())
            .map(|p| p.program)
            .collect();
        println!("  programs: {}", programs.join(", "));
    }
    status
}
