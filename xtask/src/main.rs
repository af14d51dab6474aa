//! Developer tasks that need more than a shell line.
//!
//!   cargo xtask bench-mmap [--rounds 15] [--iterations 20000]
//!
//! The mmap-storm overhead benchmark: the same storm untraced, traced by
//! heaptrace (each memory hook), and traced by an equivalent bpftrace script,
//! in alternating rounds. Reports medians, ratios to untraced, and
//! heaptrace's own CPU time and peak RSS. Needs root; run scripts/setup.sh
//! first (it installs bpftrace).
//!
//!   cargo xtask bench-gc [--rounds 12] [--bursts 1500]
//!
//! GC probe overhead: a GC-heavy Node workload, untraced vs traced.
//!
//!   cargo xtask bench-agent [--seconds 30]
//!
//! `heaptrace agent` idle and busy (CPU, RSS), and /metrics with 1,000 series.
//!
//!   cargo xtask bench-all [--rounds 8] [--iterations 20000] [--bursts 1500]
//!
//! Host-wide tracing (`--all`) while the mmap storm and a Node workload run
//! at once: both workloads' slowdowns, and the collector's CPU and RSS.
//!
//!   cargo xtask bench-stacks [--rounds 5] [--bursts 1500] [--requests 5000]
//!
//! Allocation-stack capture: a GC-heavy Node workload and an Express-like
//! server under `ab`, untraced, `heaptrace --no-stacks` and `heaptrace`, in
//! alternating rounds; captured stacks and the extra time per stack, and,
//! with kernel.bpf_stats_enabled, the memory hook's kernel time per captured
//! stack and the collector's CPU per stack named. Needs ab and bpftool
//! (scripts/setup.sh).
//!
//!   cargo xtask bench-heap [--rounds 3]
//!
//! `heaptrace heap`'s snapshot pause on 10, 100 and 500 MB heaps, against
//! node's own `--heapsnapshot-signal` snapshot, and heaptrace's own cost.
//!
//!   cargo xtask bench-record [--rounds 6] [--iterations 200000]
//!
//! The mmap storm traced without and with `--record`, alternating: the
//! storm's time and the collector's CPU, the recording's size, and how
//! fast `heaptrace report` replays it.
//!
//!   cargo xtask bench-tui [--seconds 60]
//!
//! The live view's own cost: heaptrace's CPU with the view and with
//! `--no-tui`, both in tmux terminals, tracing one node process at once.

mod bench;
mod bench_agent;
mod bench_all;
mod bench_gc;
mod bench_heap;
mod bench_record;
mod bench_stacks;
mod bench_tui;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
#[expect(clippy::enum_variant_names, reason = "every command is a bench-*")]
enum Task {
    /// Tracing overhead on the mmap storm (64 KiB mmap, touch, munmap).
    BenchMmap {
        /// Alternating rounds; each runs every configuration once.
        #[arg(long, default_value_t = 15)]
        rounds: usize,
        /// Storm iterations per run.
        #[arg(long, default_value_t = 20_000)]
        iterations: u64,
        /// Where to write the Markdown report.
        #[arg(long, default_value = "bench/results/mmap-storm.md")]
        out: std::path::PathBuf,
    },
    /// GC probe overhead on a GC-heavy Node workload, untraced vs traced.
    BenchGc {
        #[arg(long, default_value_t = 12)]
        rounds: usize,
        /// Allocation bursts per run (fixed work; 1500 is about 2 s).
        #[arg(long, default_value_t = 1500)]
        bursts: u64,
        /// The node binary (default: official 22 from scripts/fetch-node.sh).
        #[arg(long)]
        node: Option<std::path::PathBuf>,
        #[arg(long, default_value = "bench/results/gc.md")]
        out: std::path::PathBuf,
    },
    /// `heaptrace agent`: CPU and RSS idle and busy, /metrics with 1,000 series.
    BenchAgent {
        /// Length of the idle and busy windows.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        #[arg(long)]
        node: Option<std::path::PathBuf>,
        #[arg(long, default_value = "bench/results/agent.md")]
        out: std::path::PathBuf,
    },
    /// Host-wide tracing while the mmap storm and a Node workload run at once.
    BenchAll {
        #[arg(long, default_value_t = 8)]
        rounds: usize,
        #[arg(long, default_value_t = 20_000)]
        iterations: u64,
        #[arg(long, default_value_t = 1500)]
        bursts: u64,
        #[arg(long)]
        node: Option<std::path::PathBuf>,
        #[arg(long, default_value = "bench/results/host-wide.md")]
        out: std::path::PathBuf,
    },
    /// Allocation-stack capture: untraced vs --no-stacks vs stacks on, on two
    /// Node workloads.
    BenchStacks {
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// GC-heavy allocation bursts per run (fixed work).
        #[arg(long, default_value_t = 1500)]
        bursts: u64,
        /// Measured ab requests per server run (the same in every mode).
        #[arg(long, default_value_t = 5000)]
        requests: u64,
        #[arg(long)]
        node: Option<std::path::PathBuf>,
        #[arg(long, default_value = "bench/results/stacks.md")]
        out: std::path::PathBuf,
    },
    /// What a heap snapshot costs the process: pause vs heap size, paired
    /// with node's own --heapsnapshot-signal.
    BenchHeap {
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long)]
        node: Option<std::path::PathBuf>,
        #[arg(long, default_value = "bench/results/heap.md")]
        out: std::path::PathBuf,
    },
    /// What --record costs on the mmap storm, its size, and replay speed.
    BenchRecord {
        #[arg(long, default_value_t = 6)]
        rounds: usize,
        /// Storm iterations per run: enough for the collector's CPU time
        /// (counted in 10 ms ticks) to be read to a few per cent.
        #[arg(long, default_value_t = 200_000)]
        iterations: u64,
        #[arg(long, default_value = "bench/results/recording.md")]
        out: std::path::PathBuf,
    },
    /// The live view's CPU against `--no-tui`, on the same traced process.
    BenchTui {
        /// The measured window.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        #[arg(long)]
        node: Option<std::path::PathBuf>,
        #[arg(long, default_value = "bench/results/tui.md")]
        out: std::path::PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::BenchMmap { rounds, iterations, out } => bench::mmap_storm(rounds, iterations, &out),
        Task::BenchGc { rounds, bursts, node, out } => {
            bench_gc::gc_overhead(rounds, bursts, &node.unwrap_or_else(bench_gc::default_node), &out)
        }
        Task::BenchAgent { seconds, node, out } => {
            bench_agent::agent(seconds, &node.unwrap_or_else(bench_gc::default_node), &out)
        }
        Task::BenchAll { rounds, iterations, bursts, node, out } => bench_all::host_wide(
            rounds,
            iterations,
            bursts,
            &node.unwrap_or_else(bench_gc::default_node),
            &out,
        ),
        Task::BenchStacks { rounds, bursts, requests, node, out } => {
            bench_stacks::stacks(rounds, bursts, requests, &node.unwrap_or_else(bench_gc::default_node), &out)
        }
        Task::BenchTui { seconds, node, out } => {
            bench_tui::tui(seconds, &node.unwrap_or_else(bench_gc::default_node), &out)
        }
        Task::BenchHeap { rounds, node, out } => {
            bench_heap::heap_snapshot_cost(rounds, &node.unwrap_or_else(bench_gc::default_node), &out)
        }
        Task::BenchRecord { rounds, iterations, out } => {
            bench_record::recording_cost(rounds, iterations, &out)
        }
    }
}
