//! Names the user stacks that `bpftrace` prints (`ustack(perf)`, one address
//! per line) for a live process, with heaptrace's native symbolizer, and
//! times the first (cold) and a second (warm) lookup of all addresses.
//!
//! ```text
//! bpftrace -e '... { @[ustack(perf, 30)] = count(); }' > stacks.txt
//! cargo run --release --example symbolize -- PID < stacks.txt
//! ```
//!
//! Addresses are taken as the walk gave them (the innermost is the syscall's
//! ip; the others are return addresses, looked up one byte back).

use std::{
    io::{ErrorKind, Read, Write},
    time::Instant,
};

use heaptrace::symbols::native::{NativeName, NativeSymbolizer, lookup_addresses};

fn main() -> anyhow::Result<()> {
    match run() {
        // A closed pipe (`| head`) is success.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == ErrorKind::BrokenPipe) => {
            Ok(())
        }
        other => other,
    }
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let pid: u32 = args.next().ok_or_else(|| anyhow::anyhow!("usage: symbolize PID < stacks"))?.parse()?;
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let stacks = parse_stacks(&text);
    let mut out = std::io::stdout().lock();

    let mut symbolizer = NativeSymbolizer::new();
    let all: Vec<u64> = stacks.iter().flat_map(|(pcs, _)| lookup_addresses(pcs)).collect();
    // The first call parses the files; later ones cost one read of
    // /proc/PID/maps per call plus a lookup per address.
    for (what, addrs) in
        [("cold", &all[..]), ("warm", &all[..]), ("warm, one address", &all[..all.len().min(1)])]
    {
        let t = Instant::now();
        symbolizer.symbolize(pid, addrs)?;
        let took = t.elapsed();
        writeln!(out, "# {what}: {} addresses in {took:.2?}", addrs.len())?;
    }
    for (pcs, count) in &stacks {
        writeln!(out, "--- {count} x")?;
        for (pc, name) in pcs.iter().zip(symbolizer.symbolize_stack(pid, pcs)?) {
            writeln!(out, "  {pc:>14x}  {}", describe(&name))?;
        }
    }
    Ok(())
}

/// `@name[` ... one `\tADDR symbol` line per frame ... `]: COUNT`.
fn parse_stacks(text: &str) -> Vec<(Vec<u64>, u64)> {
    let mut stacks = Vec::new();
    let mut pcs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(count) = line.strip_prefix("]:") {
            stacks.push((std::mem::take(&mut pcs), count.trim().parse().unwrap_or(0)));
        } else if line.starts_with('@') {
            pcs.clear();
        } else if let Some(pc) = line.split_whitespace().next().and_then(|w| u64::from_str_radix(w, 16).ok())
        {
            pcs.push(pc);
        }
    }
    stacks
}

fn describe(name: &NativeName) -> String {
    match name {
        NativeName::Named { function, file, .. } => format!("{function}  ({})", short(file)),
        NativeName::InFile { file, offset, .. } => format!("{offset:#x} in {}", short(file)),
        NativeName::Anonymous { executable: true } => "[anonymous r-x: JIT?]".into(),
        NativeName::Anonymous { executable: false } => "[anonymous, not executable]".into(),
        NativeName::Unmapped => "[unmapped]".into(),
    }
}

fn short(file: &str) -> &str {
    heaptrace::core::sites::short_file(file)
}
