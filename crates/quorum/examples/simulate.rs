//! Runs the quorum simulator over many seeds and prints what happened.
//!
//! `cargo run --release -p sluice-quorum --example simulate -- [--seeds N] [--first S]
//! [--steps N] [--nodes N]`; a violation prints its seed and step and exits 1 (replay it
//! with `--first <seed> --seeds 1`).

use std::time::Instant;

use sluice_quorum::sim::{SimConfig, SimReport, run};

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut seeds, mut first, mut steps, mut nodes) = (1_000u64, 0u64, 2_000u64, 3u64);
    while let Some(flag) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok());
        match (flag.as_str(), value) {
            ("--seeds", Some(v)) => seeds = v,
            ("--first", Some(v)) => first = v,
            ("--steps", Some(v)) => steps = v,
            ("--nodes", Some(v)) => nodes = v,
            _ => {
                eprintln!("usage: simulate [--seeds N] [--first S] [--steps N] [--nodes N]");
                std::process::exit(2);
            }
        }
    }
    let started = Instant::now();
    let mut total = SimReport::default();
    for seed in first..first + seeds {
        match run(&SimConfig {
            seed,
            nodes,
            steps,
            faults: true,
        }) {
            Ok(r) => {
                total.proposals += r.proposals;
                total.acknowledged += r.acknowledged;
                total.final_log_len += r.final_log_len;
                total.leaders_elected += r.leaders_elected;
                total.crashes += r.crashes;
                total.partitions += r.partitions;
                total.messages_delivered += r.messages_delivered;
                total.messages_dropped += r.messages_dropped;
                total.compactions += r.compactions;
                total.restores += r.restores;
                total.snapshots_from_leader += r.snapshots_from_leader;
                total.early_elections += r.early_elections;
            }
            Err(violation) => {
                println!("VIOLATION {violation}");
                std::process::exit(1);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{seeds} seeds x {steps} steps, {nodes} nodes: {:.1} s ({:.0} seeds/min), violations: 0",
        secs,
        seeds as f64 / secs * 60.0
    );
    println!("{total:?}");
}
