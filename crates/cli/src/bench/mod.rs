//! `sluice bench`: benchmarks. Figures go to stdout; `--json` prints one JSON object per
//! measurement for scripts.

mod cleaner;
mod log;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Storage engine alone, against a plain write() loop on the same disk.
    Log(log::LogBenchArgs),
    /// Log compaction: cleaner throughput, and produce throughput while it runs.
    Cleaner(cleaner::CleanerBenchArgs),
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Log(args) => log::run(&args),
        BenchCommand::Cleaner(args) => cleaner::run(&args),
    }
}
